package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/vramcram/vramcram/vram"
)

// recentExits returns the PIDs of engines that exited within the release
// timeout and forgets older ones. Called by the loop.
func (s *Scheduler) recentExits() []int {
	cutoff := s.now().Add(-s.cfg.ReleaseTimeout)
	var keep []exitedEngine
	var pids []int
	for _, e := range s.st.exited {
		if e.at.After(cutoff) {
			keep = append(keep, e)
			pids = append(pids, e.pid)
		}
	}
	s.st.exited = keep
	return pids
}

// waitReleased blocks (in a load goroutine, never in the loop) until the
// meter no longer lists any of pids and shows needMB free, or until the
// release timeout. A dying engine's memory returns to the driver some time
// after its process is reaped; loading into that memory would fail, or make
// llama-server shrink itself to fit. Past the timeout the load proceeds under
// the ledger. A static meter knows no processes: it returns at once.
//
// Each device of the placement is checked with its own meter (meters[k]
// reads place[k]'s device; nil: a static meter, nothing to wait for).
//
// timeout and poll are the loop's ReleaseTimeout and ReleasePoll, copied
// when the load was decided (a reload may change them meanwhile).
func (s *Scheduler) waitReleased(ctx context.Context, model string, pids []int, place []Placement, meters []Meter, timeout, poll time.Duration) {
	if len(pids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := s.now()
	for d, meter := range meters {
		if meter == nil {
			continue
		}
		for k, pid := range pids {
			want := 0
			if k == len(pids)-1 {
				want = place[d].MB // free memory matters once every victim is gone
			}
			err := vram.WaitReleased(ctx, meter, pid, want, poll)
			if errors.Is(err, vram.ErrReleaseTimeout) {
				s.log.Warn("VRAM not released in time; loading under the ledger", "model", model, "pid", pid, "device", place[d].ID, "err", err)
				s.bus.Publish(Event{Type: EvReleaseTimeout, Model: model, Device: place[d].ID, Error: err.Error()})
				return
			}
			if err != nil {
				return
			}
		}
	}
	if d := s.now().Sub(start); d > 50*time.Millisecond {
		s.log.Info("waited for evicted engines' VRAM", "model", model, "seconds", d.Seconds())
	}
}
