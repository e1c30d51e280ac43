package vram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Errors returned by this package.
var (
	// ErrNVMLUnavailable means NVML could not be initialised or the device
	// opened: no driver, no GPU, or a build without NVML. OpenMeter falls
	// back to the configured total when it sees it.
	ErrNVMLUnavailable = errors.New("NVML unavailable")

	// ErrClosed is returned by Read on a meter that has been closed.
	ErrClosed = errors.New("meter closed")

	// ErrReleaseTimeout is returned (wrapped, together with the context's
	// error) by WaitReleased when the context ends before the memory is back.
	ErrReleaseTimeout = errors.New("VRAM not released")
)

// Meter reads the device's memory. *NVML and *Static implement it; the
// scheduler declares its own equivalent interface beside its use.
type Meter interface {
	Read(ctx context.Context) (Reading, error)
}

// MeterCloser is a Meter that must be closed at shutdown, as OpenMeter returns.
type MeterCloser interface {
	Meter
	io.Closer
}

// meterCloser is what the build-specific openDefaultNVML returns.
type meterCloser = MeterCloser

// OpenMeter returns the meter the daemon should use and its source: NVML on
// device 0 when the driver answers, else a Static meter of totalMB (the
// config's vram.total_mb). The fallback is logged once, at warn level, with
// the reason. When NVML is in use its total wins over totalMB, which is then
// only logged if it differs.
//
// Returns an error only when NVML is unavailable and totalMB is not positive.
// The caller must Close the meter at shutdown (Static's Close does nothing).
func OpenMeter(totalMB int, log *slog.Logger) (MeterCloser, Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return openMeter(totalMB, log, openDefaultNVML)
}

// openMeter is OpenMeter with the NVML opener injected for tests.
func openMeter(totalMB int, log *slog.Logger, open func(*slog.Logger) (meterCloser, error)) (MeterCloser, Source, error) {
	m, err := open(log)
	if err == nil {
		// A meter that opens but cannot read is no better than none.
		var r Reading
		if r, err = m.Read(context.Background()); err == nil {
			if totalMB > 0 && totalMB != r.TotalMB {
				log.Info("NVML total differs from vram.total_mb; using NVML",
					"nvml_total_mb", r.TotalMB, "total_mb", totalMB)
			}
			return m, SourceNVML, nil
		}
		err = errors.Join(err, m.Close())
	}
	s, serr := NewStatic(totalMB)
	if serr != nil {
		return nil, "", fmt.Errorf("open meter: %w; and vram.total_mb: %w", err, serr)
	}
	log.Warn("NVML unavailable, using vram.total_mb", "total_mb", totalMB, "err", err)
	return s, SourceConfig, nil
}

// DefaultReleasePoll is the poll interval WaitReleased uses when given none.
const DefaultReleasePoll = 200 * time.Millisecond

// WaitReleased polls m every poll until a reading no longer lists pid and
// shows at least wantFreeMB free, so a load never races a dying process for
// memory. pid ≤ 0 skips the first condition. A reading without per-process
// figures (a Static meter) returns nil at once: there is nothing to wait for.
// Read errors are retried until ctx ends.
//
// Returns an error wrapping both ErrReleaseTimeout and ctx.Err() when ctx
// ends first; bound the wait with a context deadline.
func WaitReleased(ctx context.Context, m Meter, pid int, wantFreeMB int, poll time.Duration) error {
	if poll <= 0 {
		poll = DefaultReleasePoll
	}
	var (
		last    Reading
		lastErr error
		timer   *time.Timer
	)
	for {
		r, err := m.Read(ctx)
		switch {
		case err != nil:
			lastErr = err
		case r.Source != SourceNVML:
			return nil
		default:
			last, lastErr = r, nil
			_, listed := r.Held(pid)
			if (pid <= 0 || !listed) && r.FreeMB >= wantFreeMB {
				return nil
			}
		}
		if timer == nil {
			timer = time.NewTimer(poll)
			defer timer.Stop()
		} else {
			timer.Reset(poll)
		}
		select {
		case <-ctx.Done():
			return releaseTimeout(ctx, pid, wantFreeMB, last, lastErr)
		case <-timer.C:
		}
	}
}

func releaseTimeout(ctx context.Context, pid, wantFreeMB int, last Reading, lastErr error) error {
	if last.Source == "" {
		return fmt.Errorf("%w by pid %d: no reading (last error: %v): %w", ErrReleaseTimeout, pid, lastErr, ctx.Err())
	}
	mb, listed := last.Held(pid)
	state := "gone"
	if listed {
		state = fmt.Sprintf("still holds %d MiB", mb)
	}
	return fmt.Errorf("%w by pid %d (%s; free %d MiB, want %d MiB): %w",
		ErrReleaseTimeout, pid, state, last.FreeMB, wantFreeMB, ctx.Err())
}

// floorMiB converts bytes to MiB, rounding down.
func floorMiB(b uint64) int { return int(b >> 20) }

// ceilMiB converts bytes to MiB, rounding up.
func ceilMiB(b uint64) int { return int((b + (1<<20 - 1)) >> 20) }
