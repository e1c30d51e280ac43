package scheduler

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vramcram/vramcram/store"
)

// A job's outcome (completed with its result, failed, requeued) is written
// by the slot goroutine that ran it. When that write fails for a reason the
// store may get over (the disk filled, an I/O error), the outcome is handed
// to the persister instead of being lost: one goroutine that holds such
// writes in memory and retries them, oldest first, with a capped backoff,
// until each lands (or the job was changed meanwhile, say cancelled). The
// job stays running in the store until then, so a restart reruns it rather
// than losing it. While anything is held, or a claim failed on a store
// error moments ago, Snapshot reports the store degraded with the reason.
//
// Held results are never dropped. Past maxHeldBytes the slots stop claiming
// new jobs (each retries after claimPause), so that a full disk cannot make
// memory grow without bound: running jobs finish, nothing new starts.

// Retry and back-pressure figures.
const (
	persistMinBackoff = 100 * time.Millisecond
	persistMaxBackoff = 5 * time.Second
	// claimPause is how long a slot whose claim failed on a store error (or
	// found the held results over the cap) waits before it reports back, so
	// that a failing store is not hammered by the loop's next dispatch.
	claimPause = time.Second
	// claimFailWindow is how long a failed claim keeps /health degraded
	// when nothing is held (a later successful claim clears it at once).
	claimFailWindow = 10 * time.Second
)

// maxHeldBytes caps the result bytes held before slots stop claiming (a
// variable for tests).
var maxHeldBytes = 256 << 20

// errWriteHeld is a slot's outcome when its store write is held for retry.
var errWriteHeld = errors.New("store write held for retry")

// writeKind is the store operation of a held write.
type writeKind string

const (
	writeComplete writeKind = "complete"
	writeFail     writeKind = "fail"
	writeRequeue  writeKind = "requeue"
	// writeRelease puts a job that never ran back in its queue, its attempt
	// not counted.
	writeRelease writeKind = "release"
)

// pendingWrite is one job outcome the store has not taken yet.
type pendingWrite struct {
	kind   writeKind
	id     string
	model  string
	result []byte // writeComplete
	reason string // writeFail, writeRequeue
}

// persister owns the held writes (its goroutine alone touches the list); the
// atomics publish its state to Snapshot and to the slots.
type persister struct {
	s      *Scheduler
	holdCh chan holdReq
	stopCh chan chan struct{}

	held      atomic.Int64           // writes held
	heldBytes atomic.Int64           // their result bytes
	failure   atomic.Pointer[string] // last store error while something is held
	claimErr  atomic.Pointer[claimFailure]
	overCap   atomic.Bool
	pauses    atomic.Int64 // slots that waited claimPause (tests watch it)
	started   atomic.Bool
}

// holdReq hands a write to the persister; ack closes once it is counted, so
// that the slot's next claim already sees the cap.
type holdReq struct {
	w   pendingWrite
	ack chan struct{}
}

type claimFailure struct {
	msg string
	at  time.Time
}

func newPersister(s *Scheduler) *persister {
	return &persister{s: s, holdCh: make(chan holdReq), stopCh: make(chan chan struct{})}
}

// retryable reports whether a failed store write may land later: not when
// the job's state moved on (cancelled), the job is gone, or the store is
// closed.
func retryable(err error) bool {
	return err != nil && !errors.Is(err, store.ErrStateConflict) && !errors.Is(err, store.ErrNotFound) &&
		!errors.Is(err, store.ErrClosed) && !errors.Is(err, store.ErrInvalid)
}

// hold hands w, whose write failed with err, to the persister if the store
// may take it later; it reports whether it did. Called by slot goroutines.
func (p *persister) hold(w pendingWrite, err error) bool {
	if !retryable(err) || !p.started.Load() {
		return false
	}
	p.s.log.Error("store refused a job outcome; holding it in memory and retrying", "job_id", w.id, "model", w.model, "op", w.kind, "err", err)
	p.setFailure(err)
	r := holdReq{w: w, ack: make(chan struct{})}
	select {
	case p.holdCh <- r:
		<-r.ack
		return true
	case <-p.s.done:
		return false
	}
}

// start runs the persister's goroutine; stop (from the loop's exit) makes one
// last attempt at every held write and ends it.
func (p *persister) start() {
	if p.started.CompareAndSwap(false, true) {
		go p.run()
	}
}

func (p *persister) stop() {
	if !p.started.Load() {
		return
	}
	done := make(chan struct{})
	p.stopCh <- done
	<-done
}

func (p *persister) run() {
	var held []pendingWrite
	delay := persistMinBackoff
	var timer *time.Timer
	var retryC <-chan time.Time
	arm := func() {
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		retryC = timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case r := <-p.holdCh:
			held = append(held, r.w)
			p.account(held)
			close(r.ack)
			if retryC == nil {
				delay = persistMinBackoff
				arm()
			}
		case <-retryC:
			retryC = nil
			held = p.retry(held, true)
			p.account(held)
			if len(held) > 0 {
				delay = min(delay*2, persistMaxBackoff)
				arm()
			}
		case done := <-p.stopCh:
			held = p.retry(held, false) // the loop is exiting: nobody to notify
			p.account(held)
			for _, w := range held {
				p.s.log.Error("job outcome not stored at shutdown; the job stays running in the store and runs again after a restart",
					"job_id", w.id, "model", w.model, "op", w.kind)
			}
			close(done)
			return
		}
	}
}

// retry tries every held write once, oldest first, and returns those still
// held. It stops at the first store error: the next would most likely fail
// too, and order is kept. notify tells the loop of a requeued job.
func (p *persister) retry(held []pendingWrite, notify bool) []pendingWrite {
	for k, w := range held {
		state, err := p.apply(w)
		switch {
		case err == nil:
			p.s.log.Info("held job outcome stored", "job_id", w.id, "model", w.model, "state", state)
			p.s.bus.Publish(Event{Type: EvJobFinished, Model: w.model, JobID: w.id, State: string(state), Error: w.reason})
			if state == store.JobStateQueued && notify {
				p.s.Notify(w.model)
			}
		case !retryable(err):
			p.s.log.Warn("held job outcome dropped: the job changed meanwhile", "job_id", w.id, "model", w.model, "err", err)
		default:
			p.setFailure(err)
			return held[k:]
		}
	}
	return nil
}

func (p *persister) apply(w pendingWrite) (store.JobState, error) {
	st := p.s.store
	switch w.kind {
	case writeComplete:
		return store.JobStateCompleted, st.Complete(w.id, w.result)
	case writeFail:
		return store.JobStateFailed, st.Fail(w.id, w.reason)
	case writeRequeue:
		return st.Requeue(w.id, w.reason)
	case writeRelease:
		return store.JobStateQueued, st.Release(w.id)
	}
	return "", fmt.Errorf("held write of job %s: unknown op %q", w.id, w.kind)
}

// account publishes the held figures and logs crossing the cap.
func (p *persister) account(held []pendingWrite) {
	n := 0
	for _, w := range held {
		n += len(w.result)
	}
	p.held.Store(int64(len(held)))
	p.heldBytes.Store(int64(n))
	if len(held) == 0 {
		p.failure.Store(nil)
	}
	over := n > maxHeldBytes
	if over != p.overCap.Swap(over) {
		if over {
			p.s.log.Warn("results held for the store exceed the cap; no new job starts until the store takes them",
				"held_jobs", len(held), "held_bytes", n, "cap_bytes", maxHeldBytes)
		} else {
			p.s.log.Info("held results back under the cap; jobs start again", "held_jobs", len(held))
		}
	}
}

func (p *persister) setFailure(err error) {
	msg := err.Error()
	p.failure.Store(&msg)
}

// claimFailed records a claim that failed on a store error; claimOK clears it.
func (p *persister) claimFailed(err error) {
	p.claimErr.Store(&claimFailure{msg: err.Error(), at: p.s.now()})
}

func (p *persister) claimOK() {
	if p.claimErr.Load() != nil {
		p.claimErr.Store(nil)
	}
}

// degraded returns why the store is failing writes, or "".
func (p *persister) degraded() (reason string, held int) {
	held = int(p.held.Load())
	if f := p.failure.Load(); f != nil && held > 0 {
		return fmt.Sprintf("store write failing: %s (%d job outcome(s) held in memory, retrying)", *f, held), held
	}
	if c := p.claimErr.Load(); c != nil && p.s.now().Sub(c.at) < claimFailWindow {
		return "store write failing: " + c.msg, held
	}
	return "", held
}

// pause waits claimPause (or until the scheduler stops).
func (p *persister) pause() {
	p.pauses.Add(1)
	t := time.NewTimer(claimPause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.s.done:
	}
}
