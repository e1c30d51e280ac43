package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vramcram/vramcram/store"
)

// Causes given to a running job's context.
var (
	errCancelled = errors.New("job cancelled")
	errShutdown  = errors.New("scheduler shutting down")
)

// Events from goroutines the loop started.
type (
	launched struct {
		inst *instance
		eng  Engine
	}
	loadDone struct {
		inst *instance
		err  error
	}
	instExited struct{ inst *instance }
	jobStarted struct{ run *jobRun }
	slotDone   struct {
		inst    *instance
		run     *jobRun // nil when no job was claimed
		empty   bool    // the model's queue was empty
		outcome store.JobState
		err     error
		usage   Usage // a completed job's tokens, read off its result
	}
	failedQueued struct {
		model string
		n     int
	}
)

// emit hands an event to the loop; it gives up once the loop has returned.
func (s *Scheduler) emit(ev any) {
	select {
	case s.evCh <- ev:
	case <-s.done:
	}
}

func (s *Scheduler) run(ctx context.Context) {
	defer close(s.done)
	s.persist.start()
	defer s.persist.stop() // before done closes: Stop waits for the last try
	// First of all (defers run last to first): from here on nothing waits
	// for the loop, so the persister's last try cannot block in Notify.
	defer close(s.exiting)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := s.st
	s.boot(ctx)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastMeter := s.now()
	for {
		s.plan(ctx)
		if s.stopped() {
			for _, r := range st.stopReplies {
				close(r)
			}
			s.log.Info("scheduler stopped")
			return
		}
		select {
		case r := <-s.reqCh:
			s.handleReq(r)
		case ev := <-s.evCh:
			s.handleEvent(ev)
		case <-st.graceCh:
			st.graceCh = nil
			s.forceStop()
		case <-tick.C:
			if s.now().Sub(lastMeter) >= s.cfg.MeterInterval {
				lastMeter = s.now()
				s.readMeter(ctx)
				s.checkAvailability()
			}
		}
		s.beat.Store(s.now().UnixNano())
	}
}

// boot reads the meter and the queue, fails jobs of models no longer
// configured, and records preload wishes: the loop's first step.
func (s *Scheduler) boot(ctx context.Context) {
	st := s.st
	s.readMeter(ctx)
	s.refreshDepths()
	s.failOrphanJobs()
	for _, name := range st.order {
		if m := st.models[name]; m.Preload {
			m.wantLoaded = true
			s.log.Info("preload requested", "model", name)
		}
	}
	s.checkAvailability()
}

// stopped reports whether a shutdown has finished: no engine, no job left.
func (s *Scheduler) stopped() bool {
	return s.st.closing && len(s.st.instances()) == 0 && len(s.st.runs) == 0
}

func (s *Scheduler) handleReq(r any) {
	st := s.st
	switch r := r.(type) {
	case admitReq:
		r.reply <- s.admitJob(r.model)
	case queuedReq:
		if m := st.models[r.model]; m != nil {
			m.queued++
			m.demand.add(s.now())
		}
	case acquireReq:
		r.reply <- s.enqueueWaiter(r.w)
	case abandonReq:
		s.abandon(r.w)
		close(r.reply)
	case cancelReq:
		run := st.runs[r.id]
		if run != nil {
			run.cancel(errCancelled)
		} else {
			s.noteEarlyCancel(r.id)
		}
		r.reply <- run != nil
	case snapshotReq:
		r.reply <- s.snapshot()
	case outputReq:
		s.followOutput(r)
	case reconfigReq:
		r.reply(s.reconfigure(r.rc))
	case progressReq:
		if run := st.runs[r.id]; run != nil {
			p, _ := run.snapshot()
			r.reply(p, true)
		} else {
			r.reply(Progress{}, false)
		}
	case textReq:
		if run := st.runs[r.id]; run != nil {
			p, text := run.snapshot()
			r.reply(text, p.Tokens, true)
		} else {
			r.reply("", 0, false)
		}
	case loadReq:
		r.reply <- s.requestLoad(r.model)
	case unloadReq:
		r.reply <- s.requestUnload(r.model)
	case stopReq:
		st.stopReplies = append(st.stopReplies, r.reply)
		if !st.closing {
			s.beginShutdown()
		}
	case forceStopReq:
		s.forceStop()
	default:
		panic(fmt.Sprintf("scheduler: unknown request %T", r))
	}
}

func (s *Scheduler) handleEvent(ev any) {
	st := s.st
	now := s.now()
	switch ev := ev.(type) {
	case launched:
		ev.inst.eng = ev.eng
		ev.inst.model.lastEng = ev.eng // its output stays readable after it exits
		if ev.inst.state == InstStopping {
			s.terminate(ev.inst)
		}
	case loadDone:
		s.onLoadDone(ev.inst, ev.err)
	case instExited:
		s.onExited(ev.inst)
	case jobStarted:
		ev.run.started = now
		st.runs[ev.run.id] = ev.run
		ev.run.inst.claiming--
		s.bus.Publish(Event{Type: EvJobStarted, Model: ev.run.model, JobID: ev.run.id})
		s.cancelIfDue(ev.run)
	case slotDone:
		i := ev.inst
		i.inflight--
		i.lastUsed = now
		i.model.lastUsed = now
		if ev.run == nil {
			i.claiming--
			if ev.err != nil && !ev.empty {
				s.log.Error("claim job", "model", i.model.Name, "err", ev.err)
				// The claim took nothing: its job still waits, even when
				// the store cannot tell us so (refreshDepths fails too).
				i.model.queued++
			}
			s.refreshDepths()
			return
		}
		delete(st.runs, ev.run.id)
		if ev.outcome == store.JobStateQueued {
			i.model.queued++
			if i.model.removed { // requeued after the removal failed the queue: fail it too
				i.model.failing = true
				s.fx.failQueued(i.model.Name, "model "+i.model.Name+" was removed from the config")
			}
		}
		if ev.outcome == store.JobStateCompleted && !ev.run.started.IsZero() {
			i.model.avgRun = ewma(i.model.avgRun, now.Sub(ev.run.started).Seconds())
		}
		if errors.Is(ev.err, errWriteHeld) {
			return // the persister publishes the outcome once it is stored
		}
		e := Event{Type: EvJobFinished, Model: i.model.Name, JobID: ev.run.id, State: string(ev.outcome)}
		if ev.err != nil {
			e.Error = ev.err.Error()
		}
		if ev.outcome == store.JobStateCompleted {
			s.recordUsage(i.model, ev.usage, now.Sub(ev.run.started), &e)
		}
		s.bus.Publish(e)
	case leaseDone:
		s.onLeaseDone(ev.lease, ev.err)
	case failedQueued:
		s.log.Warn("failed the queued jobs of a model that cannot run", "model", ev.model, "jobs", ev.n)
		if m := st.models[ev.model]; m != nil {
			m.failing = false
		}
		s.refreshDepths()
	default:
		panic(fmt.Sprintf("scheduler: unknown event %T", ev))
	}
}

// admit answers Admit for the loop.
func (s *Scheduler) admit(name string) error {
	m := s.st.models[name]
	if m == nil || m.removed {
		return fmt.Errorf("%w %q", ErrUnknownModel, name)
	}
	if m.unavailable != "" {
		return fmt.Errorf("%w: %s: %s", ErrUnavailable, name, m.unavailable)
	}
	if need := s.reservation(m); !s.fitsAlone(m, need) && !s.fitsInFleet(m) {
		return fmt.Errorf("%w: %s needs %d MiB, more than its GPUs can hold beside pinned models (largest budget %d MiB)", ErrTooLarge, name, need, s.budget())
	}
	if s.st.closing {
		return ErrStopped
	}
	return nil
}

// budget is the largest single device's total − safety margin, from the
// latest readings: the most one unsplit model can reserve.
func (s *Scheduler) budget() int {
	b := 0
	for d := range s.st.devs {
		b = max(b, s.capacityOn(d))
	}
	return b
}

// reservation is what an instance of m reserves in the ledger when it
// starts: the figure measured on an earlier load, else the configured
// vram_mb, else the estimate from the model file. An unknown size
// reserves the whole budget: the model then runs alone, which is safe.
func (s *Scheduler) reservation(m *modelState) int {
	switch {
	case m.LearnedMB > 0:
		return m.LearnedMB
	case m.VRAMMB > 0:
		return m.VRAMMB
	case m.EstimateMB > 0:
		return m.EstimateMB
	}
	return s.budget()
}

// unknownSize reports whether m has no VRAM figure at all.
func (s *Scheduler) unknownSize(m *modelState) bool {
	return m.LearnedMB <= 0 && m.VRAMMB <= 0 && m.EstimateMB <= 0
}

// ledger returns, over all devices, reserved MiB, MiB being released
// (draining or stopping) and MiB held by processes that are not ours.
func (s *Scheduler) ledger() (reserved, releasing, notOurs int) {
	for d := range s.st.devs {
		r, rel, n := s.ledgerOn(d)
		reserved, releasing, notOurs = reserved+r, releasing+rel, notOurs+n
	}
	return reserved, releasing, notOurs
}

// readMeter reads every device and folds the readings into the ledger.
func (s *Scheduler) readMeter(ctx context.Context) {
	s.recentExits() // forget exits older than the release timeout
	for d := range s.st.devs {
		s.readDevice(ctx, d)
	}
	s.learn()
}

// refreshDepths re-reads the queue lengths from the store. Slots that were
// handed out but have not claimed yet still count as waiting in the store.
func (s *Scheduler) refreshDepths() {
	depths, err := s.store.Depths()
	if err != nil {
		s.log.Error("read queue depths", "err", err)
		return
	}
	for name, m := range s.st.models {
		n := depths[name]
		if m.inst != nil {
			n -= m.inst.claiming
		}
		m.queued = max(n, 0)
	}
}

// failOrphanJobs fails queued jobs of models that are no longer configured.
func (s *Scheduler) failOrphanJobs() {
	depths, err := s.store.Depths()
	if err != nil {
		return
	}
	for name, n := range depths {
		if n > 0 && s.st.models[name] == nil {
			s.log.Warn("failing jobs of a model no longer configured", "model", name, "jobs", n)
			s.failQueuedNow(name, "model "+name+" is no longer configured")
		}
	}
}

// checkAvailability asks the launcher whether each model can start.
func (s *Scheduler) checkAvailability() {
	if s.launcher == nil {
		return
	}
	for _, name := range s.st.order {
		m := s.st.models[name]
		if m.removed {
			continue
		}
		reason := ""
		if err := s.launcher.Check(m.Model.spec()); err != nil {
			reason = err.Error()
		}
		if reason != m.unavailable {
			if reason != "" {
				s.log.Warn("model unavailable", "model", name, "reason", reason)
				s.bus.Publish(Event{Type: EvModelUnavailable, Model: name, Error: reason})
			} else {
				s.log.Info("model available", "model", name)
			}
		}
		m.unavailable = reason
	}
}

// failQueued fails every queued job of m in a goroutine, then reports back.
func (s *Scheduler) failQueued(m *modelState, reason string) {
	if m.failing {
		return
	}
	m.failing = true
	m.queued = 0
	s.failWaiters(m, fmt.Errorf("%w: %s", ErrLoadFailed, reason))
	s.fx.failQueued(m.Name, reason)
}

func (s *Scheduler) failQueuedNow(model, reason string) int {
	jobs, err := s.store.List(store.ListFilter{Model: model, State: store.JobStateQueued})
	if err != nil {
		s.log.Error("list queued jobs", "model", model, "err", err)
		return 0
	}
	n := 0
	for _, j := range jobs {
		if err := s.store.Fail(j.ID, reason); err == nil {
			n++
			s.bus.Publish(Event{Type: EvJobFinished, Model: model, JobID: j.ID, State: string(store.JobStateFailed), Error: reason})
		}
	}
	return n
}

// requestLoad records the wish to have model loaded; planLoads starts it when
// it fits without displacing busy or wanted instances.
func (s *Scheduler) requestLoad(name string) error {
	m := s.st.models[name]
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownModel, name)
	}
	if err := s.admit(name); err != nil {
		return err
	}
	if m.inst == nil || m.inst.state == InstDraining || m.inst.state == InstStopping {
		m.wantLoaded = true
	}
	return nil
}

// requestUnload drains model's instance (running jobs finish) and stops it.
func (s *Scheduler) requestUnload(name string) error {
	m := s.st.models[name]
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownModel, name)
	}
	m.wantLoaded = false
	i := m.inst
	if i == nil {
		return nil
	}
	switch i.state {
	case InstLoading:
		s.stopInstance(i, "unloaded by request")
	case InstReady:
		i.state = InstDraining
		i.stopReason = "unloaded by request"
	}
	return nil
}
