package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// ErrLoadFailed marks an interactive request whose model could not be
// loaded (it failed max_attempts times, or cannot run at all).
var ErrLoadFailed = errors.New("model failed to load")

// Lease is a slot of a ready instance handed to an interactive request (an
// OpenAI-style call whose client holds the connection). The holder talks to
// the engine at URL directly and calls Finish (or Release) when done.
type Lease struct {
	// ID names the interactive job on the event bus ("chat-N").
	ID    string
	Model string
	// URL is the engine's base URL, e.g. http://127.0.0.1:41234.
	URL string

	s    *Scheduler
	inst *instance
	ctx  context.Context
	stop context.CancelCauseFunc
	once sync.Once

	keepAlive    time.Duration // set by the holder before Finish
	keepAliveSet bool
	usage        Usage // set by the holder before Finish (SetUsage)
	usageSet     bool
	granted      time.Time // set by the loop
}

// SetKeepAlive overrides, from when the lease is finished, how long its
// instance may stay idle before it is stopped (Ollama's keep_alive): d < 0
// keeps it loaded, 0 stops it as soon as it is idle, d > 0 is the idle
// time in place of the model's TTL. Call it before Finish.
func (l *Lease) SetKeepAlive(d time.Duration) { l.keepAlive, l.keepAliveSet = d, true }

// Context ends when the engine behind the lease dies or the scheduler shuts
// down for good; a proxied request should end with it.
func (l *Lease) Context() context.Context { return l.ctx }

// Release gives the slot back after a successful request. Idempotent.
func (l *Lease) Release() { l.Finish(nil) }

// Finish gives the slot back and records the outcome on the bus: nil is
// completed, a context cancellation (client gone) is cancelled, anything
// else failed. Only the first call counts.
func (l *Lease) Finish(err error) {
	l.once.Do(func() {
		l.stop(nil)
		l.s.emit(leaseDone{lease: l, err: err})
	})
}

// waiter is an interactive request waiting for a slot. Owned by the loop.
type waiter struct {
	seq      uint64
	model    string
	priority int
	since    time.Time
	reply    chan acquireResult // buffered 1; the loop sends at most once
}

type acquireResult struct {
	lease *Lease
	err   error
}

// Requests and events of interactive leases.
type (
	acquireReq struct {
		w     *waiter
		reply chan error // the admission error, or nil once w waits
	}
	abandonReq struct {
		w     *waiter
		reply chan struct{}
	}
	leaseDone struct {
		lease *Lease
		err   error
	}
)

// Acquire waits for a free slot of a ready instance of model — loading it and
// evicting others under the same VRAM rules, priorities and policy as queued
// jobs — and returns a lease on it. priority ranks like a job's (higher
// first). Errors wrap ErrUnknownModel, ErrUnavailable, ErrTooLarge,
// ErrStopped, ErrLoadFailed, store.ErrQueueFull (Config.MaxQueue jobs and
// requests wait already), or are ctx.Err() when ctx ends first.
func (s *Scheduler) Acquire(ctx context.Context, model string, priority int) (*Lease, error) {
	w := &waiter{model: model, priority: priority, reply: make(chan acquireResult, 1)}
	admitted := make(chan error, 1)
	select {
	case s.reqCh <- acquireReq{w: w, reply: admitted}:
	case <-s.done:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once the loop has the request, its answer must be read: a waiter it
	// filed has to be withdrawn below, or its lease would never be returned.
	select {
	case err := <-admitted:
		if err != nil {
			return nil, err
		}
	case <-s.done:
		return nil, ErrStopped
	}
	select {
	case res := <-w.reply:
		return res.lease, res.err
	case <-ctx.Done():
	case <-s.done:
		return nil, ErrStopped
	}
	// Gone before a slot came: withdraw. A lease granted meanwhile goes back.
	done := make(chan struct{})
	select {
	case s.reqCh <- abandonReq{w: w, reply: done}:
		<-done
	case <-s.done:
	}
	select {
	case res := <-w.reply:
		if res.lease != nil {
			res.lease.Finish(ctx.Err())
		}
	default:
	}
	return nil, ctx.Err()
}

// enqueueWaiter admits w and files it among m's waiters, highest priority
// first, then arrival.
func (s *Scheduler) enqueueWaiter(w *waiter) error {
	if err := s.admit(w.model); err != nil {
		return err
	}
	if err := s.lineFull(); err != nil {
		return err
	}
	st := s.st
	m := st.models[w.model]
	st.waiterSeq++
	w.seq, w.since = st.waiterSeq, s.now()
	m.demand.add(w.since)
	k := len(m.waiters)
	for k > 0 && m.waiters[k-1].priority < w.priority {
		k--
	}
	m.waiters = append(m.waiters, nil)
	copy(m.waiters[k+1:], m.waiters[k:])
	m.waiters[k] = w
	return nil
}

// admitJob is Admit's answer: admit, and room in the line shared with
// waiting requests.
func (s *Scheduler) admitJob(model string) error {
	if err := s.admit(model); err != nil {
		return err
	}
	return s.lineFull()
}

// lineFull returns store.ErrQueueFull when Config.MaxQueue jobs and
// requests already wait, over all models: a waiting request holds memory
// and a connection as a queued job holds disk, so both count.
func (s *Scheduler) lineFull() error {
	if s.cfg.MaxQueue <= 0 {
		return nil
	}
	n := 0
	for _, m := range s.st.models {
		n += m.waiting()
	}
	if n >= s.cfg.MaxQueue {
		return fmt.Errorf("%w: %d jobs and requests waiting (max %d)", store.ErrQueueFull, n, s.cfg.MaxQueue)
	}
	return nil
}

// abandon removes w if it still waits.
func (s *Scheduler) abandon(w *waiter) {
	m := s.st.models[w.model]
	if m == nil {
		return
	}
	for k, x := range m.waiters {
		if x == w {
			m.waiters = append(m.waiters[:k], m.waiters[k+1:]...)
			return
		}
	}
}

// bestWaiter is the index of m's waiter to serve next: the highest aged
// priority, then the earliest arrival. -1 when none waits.
func (s *Scheduler) bestWaiter(m *modelState) int {
	best := -1
	for k, w := range m.waiters {
		if best < 0 {
			best = k
			continue
		}
		b := m.waiters[best]
		if p, q := s.effective(w.priority, w.since), s.effective(b.priority, b.since); p > q || (p == q && w.seq < b.seq) {
			best = k
		}
	}
	return best
}

// failWaiters answers every waiter of m with err.
func (s *Scheduler) failWaiters(m *modelState, err error) {
	for _, w := range m.waiters {
		w.reply <- acquireResult{err: err}
	}
	m.waiters = nil
}

// waiterFirst says whether m's best waiter goes before the head of m's
// durable queue: higher priority, or equal priority and earlier arrival.
func (s *Scheduler) waiterFirst(w *waiter, head headInfo) bool {
	wp := s.effective(w.priority, w.since)
	if !head.ok || wp != head.priority {
		return !head.ok || wp > head.priority
	}
	return !head.since.Before(w.since)
}

// effective is a priority aged by Config.Aging.
func (s *Scheduler) effective(priority int, since time.Time) int {
	return store.EffectivePriority(priority, since, s.now(), s.cfg.Aging)
}

// headInfo is the head of one model's durable queue.
type headInfo struct {
	ok       bool
	priority int // aged
	since    time.Time
}

// grant hands a free slot of i to m's first waiter.
func (s *Scheduler) grant(i *instance, m *modelState) {
	k := s.bestWaiter(m)
	w := m.waiters[k]
	m.waiters = append(m.waiters[:k], m.waiters[k+1:]...)
	u, ok := i.eng.(engine.URLer)
	if !ok {
		w.reply <- acquireResult{err: fmt.Errorf("%w: %s: its engine takes no direct requests", ErrUnavailable, m.Name)}
		return
	}
	st := s.st
	st.leaseSeq++
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{ID: "chat-" + strconv.FormatUint(st.leaseSeq, 10), Model: m.Name, URL: u.URL(), s: s, inst: i, ctx: ctx, stop: cancel,
		granted: s.now()}
	i.inflight++
	st.leases[l.ID] = l
	s.bus.Publish(Event{Type: EvJobStarted, Model: m.Name, JobID: l.ID})
	w.reply <- acquireResult{lease: l}
}

// onLeaseDone takes a lease's slot back.
func (s *Scheduler) onLeaseDone(l *Lease, err error) {
	st := s.st
	if _, ok := st.leases[l.ID]; !ok {
		return
	}
	delete(st.leases, l.ID)
	now := s.now()
	i := l.inst
	i.inflight--
	i.lastUsed, i.model.lastUsed = now, now
	if l.keepAliveSet {
		i.keepAlive, i.keepAliveSet = l.keepAlive, true
	}
	e := Event{Type: EvJobFinished, Model: l.Model, JobID: l.ID, State: string(store.JobStateCompleted)}
	switch {
	case errors.Is(err, context.Canceled):
		e.State = string(store.JobStateCancelled)
	case err != nil:
		e.State, e.Error = string(store.JobStateFailed), err.Error()
	}
	if err == nil && l.usageSet {
		s.recordUsage(i.model, l.usage, now.Sub(l.granted), &e)
	}
	s.bus.Publish(e)
}

// endLeases cancels the leases on i (all leases when i is nil).
func (s *Scheduler) endLeases(i *instance, cause error) {
	for _, l := range s.st.leases {
		if i == nil || l.inst == i {
			l.stop(cause)
		}
	}
}
