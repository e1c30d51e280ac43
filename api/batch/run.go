package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// fullPassEvery: every this many ticks each unfinished batch is recounted
// even if no job_finished event named it (events can be dropped).
const fullPassEvery = 10

// Run advances the batches until ctx ends: on a Create or Cancel, on a
// tick, and soon after a batch's job finishes.
func (m *Manager) Run(ctx context.Context) {
	sub := m.sched.Bus().Subscribe(1024)
	defer sub.Close()
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	dirty := map[string]bool{}
	ticks := 0
	m.removeTemps()
	m.pass(ctx, dirty, true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kickCh:
			m.pass(ctx, dirty, true)
		case <-t.C:
			ticks++
			m.pass(ctx, dirty, ticks%fullPassEvery == 0)
		case ev, ok := <-sub.C:
			if !ok {
				return
			}
			if ev.Type == scheduler.EvJobFinished {
				if id, ok := batchOfJob(ev.JobID); ok {
					dirty[id] = true
				}
			}
		}
	}
}

// removeTemps deletes the partial uploads and outputs a crash left behind
// (older than an hour, so that an upload already under way is spared).
func (m *Manager) removeTemps() {
	for _, pattern := range []string{".upload-*", ".output-*"} {
		paths, _ := filepath.Glob(filepath.Join(m.cfg.Dir, pattern))
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > time.Hour {
				if err := os.Remove(p); err == nil {
					m.log.Info("removed a partial file left by a crash", "path", p)
				}
			}
		}
	}
}

// batchOfJob returns the batch a job ID belongs to (BatchJobID's shape).
func batchOfJob(jobID string) (string, bool) {
	if !strings.HasPrefix(jobID, "batch_") {
		return "", false
	}
	k := strings.LastIndexByte(jobID, '-')
	if k < 0 {
		return "", false
	}
	return jobID[:k], true
}

// pass advances every unfinished batch that may have something to do, and
// refreshes Stats. A full pass reads every batch record (new ones
// included) and recounts every unfinished batch; the others read only the
// batches known to be unfinished, and recount those that are not waiting
// on their jobs or whose jobs finished (dirty).
func (m *Manager) pass(ctx context.Context, dirty map[string]bool, full bool) {
	var batches []store.Batch
	if full {
		all, err := m.st.ListBatches("", 0)
		if err != nil {
			m.log.Error("list batches", "err", err)
			return
		}
		clear(m.finished)
		clear(m.active)
		for _, b := range all {
			if b.Status.Final() {
				m.finished[b.Status]++
				continue
			}
			m.active[b.ID] = true
			batches = append(batches, b)
		}
	} else {
		for id := range m.active {
			b, err := m.st.GetBatch(id)
			if err != nil {
				m.log.Error("read batch", "batch_id", id, "err", err)
				continue
			}
			batches = append(batches, b)
		}
	}
	stats := &Stats{Batches: map[store.BatchStatus]int{}, Lines: map[store.JobState]int{}}
	for _, b := range batches {
		waiting := b.Status == store.BatchInProgress && b.Enqueued == b.Counts.Total && !b.Expire &&
			!m.now().After(b.ExpiresAt)
		if ctx.Err() == nil && (!waiting || full || dirty[b.ID]) {
			nb, err := m.advance(ctx, b)
			if err != nil {
				m.log.Error("advance batch", "batch_id", b.ID, "status", b.Status, "err", err)
			} else {
				b = nb
			}
		}
		if b.Status.Final() {
			delete(m.active, b.ID)
			delete(m.states, b.ID)
			m.finished[b.Status]++
			continue
		}
		stats.Batches[b.Status]++
		m.addLines(stats, b)
	}
	for st, n := range m.finished {
		stats.Batches[st] += n
	}
	clear(dirty)
	m.stats.Store(stats)
}

// addLines adds b's line states to stats: the latest count this loop made,
// else what the batch's stored counts say. Lines not yet enqueued count as
// "pending".
func (m *Manager) addLines(stats *Stats, b store.Batch) {
	if states, ok := m.states[b.ID]; ok {
		for s, n := range states {
			stats.Lines[s] += n
		}
	} else {
		stats.Lines[store.JobStateCompleted] += b.Counts.Completed
		stats.Lines[store.JobStateFailed] += b.Counts.Failed
		stats.Lines[store.JobStateQueued] += b.Enqueued - b.Counts.Completed - b.Counts.Failed
	}
	if pending := b.Counts.Total - b.Enqueued; pending > 0 {
		stats.Lines[LinePending] += pending
	}
}

// LinePending is the Stats.Lines key of lines not yet enqueued.
const LinePending store.JobState = "pending"

// advance takes batch b as far as it can go now and returns it as stored.
func (m *Manager) advance(ctx context.Context, b store.Batch) (store.Batch, error) {
	for range 4 { // validating → in_progress → finalizing → completed at most
		from, expire := b.Status, b.Expire
		nb, err := m.step(ctx, b)
		if err != nil || nb.Status.Final() || (nb.Status == from && nb.Expire == expire) {
			return nb, err
		}
		b = nb
	}
	return b, nil
}

// step makes one move of b.
func (m *Manager) step(ctx context.Context, b store.Batch) (store.Batch, error) {
	switch b.Status {
	case store.BatchValidating:
		return m.validate(ctx, b)
	case store.BatchInProgress:
		if !b.Expire && m.now().After(b.ExpiresAt) {
			return m.expire(b)
		}
		if !b.Expire && b.Enqueued < b.Counts.Total {
			var err error
			if b, err = m.enqueue(ctx, b); err != nil || b.Status != store.BatchInProgress {
				return b, err
			}
		}
		return m.progress(ctx, b)
	case store.BatchCancelling:
		return m.progress(ctx, b)
	case store.BatchFinalizing:
		return m.finalize(b)
	}
	return b, nil
}

// setStatus moves b from its status to next, stamping the time.
func (m *Manager) setStatus(b store.Batch, next store.BatchStatus, change func(*store.Batch)) (store.Batch, error) {
	from := b.Status
	nb, err := m.st.UpdateBatch(b.ID, func(s *store.Batch) error {
		if s.Status != from {
			return fmt.Errorf("%w: batch is %s, not %s", store.ErrStateConflict, s.Status, from)
		}
		s.Status = next
		stamp(s, next, m.now())
		if change != nil {
			change(s)
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	m.log.Info("batch status", "batch_id", b.ID, "state", next, "from", from)
	m.publish(nb)
	return nb, nil
}

func stamp(b *store.Batch, s store.BatchStatus, now time.Time) {
	switch s {
	case store.BatchFailed:
		b.FailedAt = now
	case store.BatchInProgress:
		b.InProgressAt = now
	case store.BatchFinalizing:
		b.FinalizingAt = now
	case store.BatchCompleted:
		b.CompletedAt = now
	case store.BatchCancelling:
		b.CancellingAt = now
	case store.BatchCancelled:
		b.CancelledAt = now
	case store.BatchExpired:
		b.ExpiredAt = now
	}
}

// validate checks every line of b's input: a bad line fails the batch
// with errors naming the lines; otherwise it goes in progress.
func (m *Manager) validate(ctx context.Context, b store.Batch) (store.Batch, error) {
	f, err := os.Open(m.path(b.InputFileID))
	if err != nil {
		return m.setStatus(b, store.BatchFailed, func(s *store.Batch) {
			s.Errors = []store.BatchError{{Code: "input_file_missing", Param: "input_file_id", Message: "the input file is gone: " + err.Error()}}
		})
	}
	defer f.Close()
	v, err := m.validateFile(ctx, f, b.Endpoint)
	if err != nil {
		return b, fmt.Errorf("validate: %w", err)
	}
	if len(v.errors) > 0 {
		return m.setStatus(b, store.BatchFailed, func(s *store.Batch) {
			s.Errors = v.errors
			s.Counts.Total = v.total
		})
	}
	return m.setStatus(b, store.BatchInProgress, func(s *store.Batch) { s.Counts.Total = v.total })
}

// enqueue turns the next lines of b into jobs, chunk by chunk, until all
// are queued or the queue is full (the next pass goes on).
func (m *Manager) enqueue(ctx context.Context, b store.Batch) (store.Batch, error) {
	f, err := os.Open(m.path(b.InputFileID))
	if errors.Is(err, os.ErrNotExist) {
		// The input was deleted mid-way: stop as a cancel does, saying why.
		m.log.Warn("batch input file deleted: cancelling the batch", "batch_id", b.ID, "input_file_id", b.InputFileID)
		return m.setStatus(b, store.BatchCancelling, func(s *store.Batch) {
			s.Errors = append(s.Errors, store.BatchError{Code: "input_file_missing", Param: "input_file_id",
				Message: fmt.Sprintf("input file %s was deleted before every line was queued", b.InputFileID)})
		})
	}
	if err != nil {
		return b, fmt.Errorf("open input: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(b.Offset, io.SeekStart); err != nil {
		return b, fmt.Errorf("seek input: %w", err)
	}
	lr := newLineReader(f, b.Offset, m.cfg.MaxLineBytes)
	for b.Enqueued < b.Counts.Total && ctx.Err() == nil {
		lines := make([]store.BatchLine, 0, m.cfg.Chunk)
		for len(lines) < m.cfg.Chunk && b.Enqueued+len(lines) < b.Counts.Total {
			text, end, err := lr.next()
			if err != nil {
				return b, fmt.Errorf("read input line %d: %w", b.Enqueued+len(lines), err)
			}
			p, bad := m.parseLine(text, b.Endpoint)
			if bad != nil { // the file changed since validation
				return b, fmt.Errorf("input line %d: %s", b.Enqueued+len(lines), bad.Message)
			}
			lines = append(lines, store.BatchLine{CustomID: p.customID, Model: p.model, Type: m.cfg.Kinds[p.model], Body: p.body, End: end})
		}
		n, err := m.st.EnqueueBatchLines(b.ID, b.Enqueued, lines, m.cfg.Priority, m.cfg.MaxAttempts)
		if errors.Is(err, store.ErrQueueFull) {
			break
		}
		if err != nil {
			return b, err
		}
		for _, l := range lines[:n] {
			m.sched.Notify(l.Model)
		}
		b.Enqueued += n
		b.Offset = lines[n-1].End
		if n < len(lines) {
			break // the queue is full; the rest next pass
		}
	}
	return m.st.GetBatch(b.ID)
}

// expire marks b as past its window: its queued lines are cancelled (they
// will be reported expired), running ones finish.
func (m *Manager) expire(b store.Batch) (store.Batch, error) {
	nb, err := m.st.UpdateBatch(b.ID, func(s *store.Batch) error {
		s.Expire = true
		return nil
	})
	if err != nil {
		return b, err
	}
	m.log.Warn("batch expired: cancelling its unfinished lines", "batch_id", b.ID)
	return nb, nil
}

// progress recounts b's lines, stops what a cancel or expiry stops, and
// finalizes once no line is queued or running.
func (m *Manager) progress(ctx context.Context, b store.Batch) (store.Batch, error) {
	stopping := b.Status == store.BatchCancelling || b.Expire
	if stopping {
		cancelled := 0
		for from := 0; from < b.Enqueued; from += 1024 {
			models, err := m.st.CancelBatchLines(b.ID, from, 1024)
			if err != nil {
				return b, err
			}
			for _, n := range models {
				cancelled += n
			}
		}
		if cancelled > 0 { // the scheduler finds the queues shorter at its next claim
			m.log.Info("batch: queued lines cancelled", "batch_id", b.ID, "lines", cancelled, "expired", b.Expire)
		}
	}
	states, err := m.st.BatchJobStates(b.ID)
	if err != nil {
		return b, err
	}
	m.states[b.ID] = states
	done, failed := states[store.JobStateCompleted], states[store.JobStateFailed]
	if done != b.Counts.Completed || failed != b.Counts.Failed {
		if b, err = m.st.UpdateBatch(b.ID, func(s *store.Batch) error {
			s.Counts.Completed, s.Counts.Failed = done, failed
			return nil
		}); err != nil {
			return b, err
		}
	}
	active := states[store.JobStateQueued] + states[store.JobStateRunning]
	if active > 0 || (!stopping && b.Enqueued < b.Counts.Total) {
		return b, nil
	}
	if b.Status == store.BatchInProgress {
		if b, err = m.setStatus(b, store.BatchFinalizing, nil); err != nil {
			return b, err
		}
	}
	return m.finalize(b)
}
