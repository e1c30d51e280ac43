package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// plan runs after every request, event and tick: it hands free slots to
// queued work, retires idle drained instances, and starts loads that fit.
func (s *Scheduler) plan(ctx context.Context) {
	s.dropRemoved() // reconfigure.go
	st := s.st
	now := s.now()
	heads := s.headsFunc()
	for _, i := range st.instances() {
		m := i.model
		switch i.state {
		case InstReady:
			if st.closing || engineGone(i) {
				continue // a dead engine's exit event is on its way
			}
			s.serve(ctx, i, heads)
			if ttl := i.ttl(); ttl > 0 && i.inflight == 0 && m.waiting() == 0 && now.Sub(i.lastUsed) >= ttl {
				s.stopInstance(i, "idle for ttl")
			}
		case InstDraining:
			if i.drainLeft > 0 && !st.closing && !engineGone(i) {
				s.serve(ctx, i, heads)
			}
			if i.inflight == 0 {
				s.stopInstance(i, i.stopReason)
			}
		}
	}
	if st.closing {
		return
	}
	for _, name := range st.order {
		m := st.models[name]
		if m.waiting() == 0 || m.failing {
			continue
		}
		switch {
		case m.removed: // a job that came in as it was removed
			s.failQueued(m, "model "+m.Name+" was removed from the config")
		case m.unavailable != "":
			s.failQueued(m, "model unavailable: "+m.unavailable)
		case !s.fitsAlone(m, s.reservation(m)) && !s.fitsInFleet(m):
			s.failQueued(m, "model needs more VRAM than the budget (beside pinned models) on its GPUs")
		}
	}
	s.planLoads(ctx, now)
}

// serve hands i's free slots to its model's queued jobs and waiters; a
// draining instance serves only its drainLeft.
func (s *Scheduler) serve(ctx context.Context, i *instance, heads func(string) headInfo) {
	m := i.model
	for i.inflight < m.Slots && m.waiting() > 0 && (i.state == InstReady || i.drainLeft > 0) {
		if i.state == InstDraining {
			i.drainLeft--
		}
		if len(m.waiters) == 0 || m.queued == 0 {
			s.dispatchOrGrant(ctx, i, m)
			continue
		}
		if s.waiterFirst(m.waiters[s.bestWaiter(m)], heads(m.Name)) {
			s.grant(i, m)
			continue
		}
		// The queue's head goes first. The next head is only known
		// once this claim is done (jobStarted plans again), so hand
		// out one slot and compare afresh then.
		s.dispatch(ctx, i)
		break
	}
}

// planLoads starts the loads that the policy allows, evicting or draining
// victims when the ledger is short.
func (s *Scheduler) planLoads(ctx context.Context, now time.Time) {
	st := s.st
	var cands []candidate
	for _, name := range st.order {
		m := st.models[name]
		if m.inst != nil || m.removed || m.unavailable != "" || m.failing || now.Before(m.backoffUntil) {
			continue
		}
		if !s.fitsAlone(m, s.reservation(m)) {
			continue
		}
		if m.waiting() > 0 || m.wantLoaded {
			cands = append(cands, candidate{Model: name})
		}
	}
	if len(cands) == 0 {
		return
	}
	heads := s.headsFunc()
	prior := st.meanFigures()
	for k := range cands {
		c := &cands[k]
		c.Full = st.models[c.Model].backlogFull(prior)
		c.Demand = st.models[c.Model].demand.now(now)
		h := heads(c.Model)
		if h.ok {
			c.HasHead, c.Priority, c.Since = true, h.priority, h.since
		}
		if m := st.models[c.Model]; len(m.waiters) > 0 {
			if w := m.waiters[s.bestWaiter(m)]; s.waiterFirst(w, h) {
				c.HasHead, c.Priority, c.Since = true, s.effective(w.priority, w.since), w.since
			}
		}
	}
	for k := range cands {
		cands[k].Swap = st.models[cands[k].Model].swapTime(prior)
	}
	setDue(cands, s.cfg.MaxWait, s.lanes(cands))
	orderCandidates(cands)
	// The fleet is asked (deferLoad, which takes the fleet's load claim)
	// only for a model this node is about to load or make room for: a
	// claim taken for a model that does not fit here kept the other nodes
	// from loading it until max_wait.
	for _, c := range cands {
		m := st.models[c.Model]
		opts := s.options(m, s.reservation(m))
		if place, ok := s.fitNow(opts); ok {
			if !s.deferLoad(m, heads(c.Model)) {
				s.startLoad(ctx, m, place)
			}
			continue
		}
		if !c.HasHead {
			// A load wish displaces only idle instances with nothing queued.
			if r, ok := s.makeRoom(m, opts, evictRule{scope: scopeIdleNoWork}); ok && !r.wait && !s.deferLoad(m, heads(c.Model)) {
				for _, v := range r.victims {
					s.evict(v, m.Name)
				}
			}
			continue
		}
		r, ok := s.makeRoom(m, opts, ruleFor(s.cfg.Policy, c, now))
		if ok && s.deferLoad(m, heads(c.Model)) {
			continue // another node serves it: make no room here
		}
		if ok && r.wait {
			return // memory is already on its way back; wait for it
		}
		if ok {
			for _, v := range r.victims {
				s.evict(v, m.Name)
			}
			return
		}
		if s.cfg.Policy == PolicyFIFO && c.HasHead {
			return // strict order: nobody overtakes the oldest job
		}
	}
}

// victimsOn lists the instances on device d that a load for m might
// displace, each with its share of d.
func (s *Scheduler) victimsOn(m *modelState, d int) []victim {
	var out []victim
	for _, i := range s.st.instances() {
		if i.model == m || (i.state != InstReady && i.state != InstLoading) || i.shareOn(d) == 0 {
			continue
		}
		if i.state == InstLoading {
			continue // never kill a load half-way; it becomes a victim once ready
		}
		out = append(out, victim{
			ID: i.id, Model: i.model.Name, ReservedMB: i.shareOn(d), LastUsed: i.lastUsed,
			Busy: i.inflight > 0, Queued: i.model.waiting(), Pinned: i.model.Pinned, Demand: i.model.demand.now(s.now()),
		})
	}
	return out
}

// evict stops an idle victim or drains a busy one.
func (s *Scheduler) evict(v victim, forModel string) {
	i := s.st.models[v.Model].inst
	if i == nil || i.id != v.ID {
		return
	}
	reason := "evicted for " + forModel
	s.log.Info("evicting model", "model", v.Model, "for", forModel, "busy", v.Busy, "vram_mb", v.ReservedMB)
	s.bus.Publish(Event{Type: EvModelEvicted, Model: v.Model, Reason: reason})
	if v.Busy {
		i.state = InstDraining
		i.stopReason = reason
		if s.cfg.Policy == PolicyBatch {
			i.drainLeft = v.Queued // a batch serves what it had queued
		}
		return
	}
	s.stopInstance(i, reason)
}

// startLoad reserves need MiB for a new instance of m and spawns it.
func (s *Scheduler) startLoad(ctx context.Context, m *modelState, place []Placement) {
	st := s.st
	st.nextInstID++
	lctx, cancel := context.WithCancel(ctx)
	i := &instance{id: st.nextInstID, model: m, state: InstLoading, startedAt: s.now(), cancelLoad: cancel}
	i.setShares(place)
	i.estimate, i.estimateMB = place, i.reservedMB
	m.inst = i
	s.log.Info("loading model", "model", m.Name, "vram_mb", i.reservedMB, "gpus", placeIDs(place))
	s.bus.Publish(Event{Type: EvModelLoading, Model: m.Name, VRAMMB: i.reservedMB, Device: placeIDs(place)})
	s.fx.load(lctx, i, s.recentExits())
}

// placeIDs lists a placement's device IDs, as CUDA_VISIBLE_DEVICES does.
func placeIDs(place []Placement) string {
	ids := make([]string, len(place))
	for k, p := range place {
		ids[k] = p.ID
	}
	return strings.Join(ids, ",")
}

func (s *Scheduler) onLoadDone(i *instance, err error) {
	m := i.model
	if m.inst != i {
		return // stopped while loading and already gone (instExited came first)
	}
	now := s.now()
	if err == nil && i.exited {
		err = fmt.Errorf("engine exited right after it was ready: %s", errString(i.eng.Err()))
	}
	if err == nil && i.state == InstLoading {
		i.state = InstReady
		i.readyAt, i.lastUsed = now, now
		m.lastUsed = now
		m.loadFailures, m.lastErr = 0, ""
		m.wantLoaded = false
		secs := now.Sub(i.startedAt).Seconds()
		m.avgLoad = ewma(m.avgLoad, secs)
		s.log.Info("model ready", "model", m.Name, "pid", i.eng.PID(), "load_seconds", secs)
		s.bus.Publish(Event{Type: EvModelReady, Model: m.Name, VRAMMB: i.reservedMB, Seconds: secs})
		s.readMeter(context.Background()) // measure the new engine now
		return
	}
	if err != nil && i.state != InstStopping {
		m.loadFailures++
		m.lastErr = err.Error()
		m.backoffUntil = now.Add(backoff(m.loadFailures))
		s.log.Error("model failed to load", "model", m.Name, "attempt", m.loadFailures, "err", err)
		s.bus.Publish(Event{Type: EvModelFailed, Model: m.Name, Error: m.lastErr})
		if m.loadFailures >= s.cfg.MaxAttempts {
			s.failQueued(m, "model failed to load: "+m.lastErr)
			m.loadFailures = 0
			m.wantLoaded = false
		}
	}
	if i.state != InstStopping {
		i.state = InstStopping
		i.stopReason = "load failed"
	}
	if i.eng == nil || i.exited {
		s.remove(i) // nothing was started, or it is already gone
		return
	}
	s.terminate(i)
}

func (s *Scheduler) onExited(i *instance) {
	i.exited = true
	m := i.model
	s.endLeases(i, errors.New("engine exited"))
	if i.state == InstLoading {
		// The load goroutine still owes its loadDone, which accounts the
		// failure (and its backoff) and removes the instance.
		return
	}
	if i.state == InstReady || i.state == InstDraining {
		err := i.eng.Err()
		m.crashes++
		m.lastErr = "engine exited: " + errString(err)
		m.backoffUntil = s.now().Add(backoff(m.crashes - 1))
		s.log.Error("engine exited unexpectedly", "model", m.Name, "pid", i.eng.PID(), "err", err)
		s.bus.Publish(Event{Type: EvModelFailed, Model: m.Name, Error: m.lastErr})
		// The jobs it was running fail in their runSlot and are requeued.
	} else if i.state == InstStopping {
		m.crashes = 0
	}
	s.remove(i)
}

// remove drops an exited (or never started) instance: its reservation leaves
// the ledger.
func (s *Scheduler) remove(i *instance) {
	i.cancelLoad()
	if pid := lastPID(i.eng); pid > 0 {
		s.st.exited = append(s.st.exited, exitedEngine{pid: pid, at: s.now()})
	}
	if i.model.inst == i {
		i.model.inst = nil
	}
	s.bus.Publish(Event{Type: EvModelUnloaded, Model: i.model.Name, Reason: i.stopReason})
}

// stopInstance begins stopping i; its reservation stays until it has exited.
func (s *Scheduler) stopInstance(i *instance, reason string) {
	if i.state == InstStopping {
		return
	}
	i.state = InstStopping
	i.stopReason = reason
	s.log.Info("stopping model", "model", i.model.Name, "reason", reason)
	i.cancelLoad()
	if i.eng != nil {
		s.terminate(i)
	}
}

// terminate stops the engine process; instExited follows.
func (s *Scheduler) terminate(i *instance) {
	s.fx.terminate(i)
}

// dispatchOrGrant serves whichever kind of work m has.
func (s *Scheduler) dispatchOrGrant(ctx context.Context, i *instance, m *modelState) {
	if len(m.waiters) > 0 {
		s.grant(i, m)
		return
	}
	s.dispatch(ctx, i)
}

// dispatch hands one slot of i to a goroutine that claims and runs a job.
func (s *Scheduler) dispatch(ctx context.Context, i *instance) {
	i.inflight++
	i.claiming++
	i.model.queued--
	s.fx.runSlot(ctx, i)
}

// finish records a job's outcome in the store and returns its new state.
func (s *Scheduler) finish(ctx context.Context, i *instance, job store.Job, result []byte, runErr error) (store.JobState, error) {
	log := s.log.With("model", job.Model, "job_id", job.ID)
	switch cause := context.Cause(ctx); {
	case runErr == nil:
		if err := s.store.Complete(job.ID, result); err != nil {
			if errors.Is(err, store.ErrStateConflict) {
				return store.JobStateCancelled, nil
			}
			if s.persist.hold(pendingWrite{kind: writeComplete, id: job.ID, model: job.Model, result: result}, err) {
				return store.JobStateCompleted, errWriteHeld
			}
			log.Error("complete job", "err", err)
			return store.JobStateRunning, err
		}
		return store.JobStateCompleted, nil
	case errors.Is(cause, errCancelled):
		log.Info("job cancelled while running")
		return store.JobStateCancelled, nil
	case errors.Is(cause, errShutdown):
		if err := s.store.Release(job.ID); err != nil && !s.persist.hold(pendingWrite{kind: writeRelease, id: job.ID, model: job.Model}, err) {
			log.Error("release job", "err", err) // still running in the store: the next start requeues it
		}
		return store.JobStateQueued, errShutdown
	}
	if errors.Is(runErr, ErrRejected) {
		// The engine (or the params) refused this job: retrying cannot help.
		if err := s.store.Fail(job.ID, runErr.Error()); err != nil {
			if s.persist.hold(pendingWrite{kind: writeFail, id: job.ID, model: job.Model, reason: runErr.Error()}, err) {
				return store.JobStateFailed, errWriteHeld
			}
			log.Error("fail job", "err", err)
			return store.JobStateRunning, err
		}
		log.Warn("job rejected", "err", runErr)
		return store.JobStateFailed, runErr
	}
	// The engine failed. If it is dying, wait briefly so the error names why.
	reason := runErr.Error()
	if _, oneShot := i.eng.(engine.OneShot); !oneShot {
		select {
		case <-i.eng.Done():
			if e := i.eng.Err(); e != nil {
				reason = "engine exited: " + e.Error()
			}
		case <-time.After(500 * time.Millisecond):
		}
	}
	state, err := s.store.Requeue(job.ID, reason)
	if err != nil {
		if s.persist.hold(pendingWrite{kind: writeRequeue, id: job.ID, model: job.Model, reason: reason}, err) {
			return store.JobStateRunning, errWriteHeld
		}
		log.Error("requeue job", "err", err)
		return store.JobStateRunning, err
	}
	log.Warn("job failed on engine", "state", state, "err", reason)
	return state, errors.New(reason)
}

// beginShutdown drains every instance: running jobs may finish within the
// grace period; nothing new is claimed.
func (s *Scheduler) beginShutdown() {
	st := s.st
	st.closing = true
	grace := s.cfg.ShutdownGrace
	if grace <= 0 {
		grace = time.Nanosecond
	}
	st.graceCh = time.After(grace)
	s.log.Info("scheduler draining", "running", len(st.runs), "interactive", len(st.leases), "grace", grace)
	for _, name := range st.order {
		s.failWaiters(st.models[name], ErrStopped)
	}
	for _, i := range st.instances() {
		switch i.state {
		case InstLoading:
			s.stopInstance(i, "shutdown")
		case InstReady:
			i.state = InstDraining
			i.stopReason = "shutdown"
		}
	}
}

// forceStop returns running jobs to the queue and stops all engines.
func (s *Scheduler) forceStop() {
	st := s.st
	if st.forced {
		return
	}
	st.forced = true
	if !st.closing {
		s.beginShutdown()
	}
	for _, id := range slices.Sorted(maps.Keys(st.runs)) {
		st.runs[id].cancel(errShutdown)
	}
	s.endLeases(nil, errShutdown)
}

// snapshot builds a Snapshot for the loop.
func (s *Scheduler) snapshot() Snapshot {
	st := s.st
	now := s.now()
	snap := Snapshot{Policy: string(s.cfg.Policy), VRAMSource: string(st.devs[0].reading.Source),
		Running: len(st.runs) + len(st.leases)}
	snap.StoreDegraded, snap.HeldWrites = s.persist.degraded()
	for d, dv := range st.devs {
		reserved, _, notOurs := s.ledgerOn(d)
		ds := DeviceStatus{Index: d, ID: dv.ID, Name: dv.Name, Source: string(dv.reading.Source), TotalMB: dv.reading.TotalMB,
			BudgetMB: s.budgetOn(d), ReservedMB: reserved, NotOursMB: notOurs, Lost: dv.lost}
		ds.FreeMB = max(ds.BudgetMB-reserved-notOurs, 0)
		snap.Devices = append(snap.Devices, ds)
		snap.TotalMB += ds.TotalMB
		snap.BudgetMB += ds.BudgetMB
		snap.ReservedMB += reserved
		snap.NotOursMB += notOurs
		snap.FreeMB += ds.FreeMB
	}
	for _, name := range st.order {
		m := st.models[name]
		ms := ModelStatus{
			Name: name, Type: string(m.Kind), State: modelStateName(m, now), VRAMMB: m.VRAMMB, EstimateMB: m.EstimateMB,
			AvgJobSeconds: roundMs(m.avgRun), AvgLoadSeconds: roundMs(m.avgLoad),
			LearnedMB: m.LearnedMB, Pinned: m.Pinned, Slots: m.Slots, Queued: m.waiting(), LastUsed: timePtr(m.lastUsed),
			PromptTokens: m.tokens.prompt, GeneratedTokens: m.tokens.generated, TokensPerSecond: roundMs(m.tokens.tps),
		}
		if i := m.inst; i != nil {
			ms.ReservedMB = i.reservedMB
			ms.MeasuredMB = i.measuredMB
			ms.Placement = i.place
			ms.Running = i.inflight - i.claiming
			ms.Queued += i.claiming
			ms.LoadedAt = timePtr(i.readyAt)
			if i.eng != nil {
				ms.PID = i.eng.PID()
			}
		}
		switch {
		case m.removed:
			ms.Reason = "removed from the config: stops once its running work ends"
		case m.unavailable != "":
			ms.Reason = m.unavailable
		case m.lastErr != "":
			ms.Reason = m.lastErr
		}
		snap.QueueDepth += ms.Queued
		snap.Models = append(snap.Models, ms)
	}
	return snap
}

// roundMs rounds seconds to milliseconds.
func roundMs(sec float64) float64 { return math.Round(sec*1000) / 1000 }

// ewma folds x into a moving average that weighs recent values most; the
// first value is taken as is.
func ewma(avg, x float64) float64 {
	if avg == 0 {
		return x
	}
	return 0.8*avg + 0.2*x
}

// ETA estimates the seconds until a job that has position jobs ahead of it
// in model's queue finishes: the jobs ahead and itself spread over the
// model's slots, plus a load when the model is not loaded. false when the
// model has no completed job yet to go by.
func (ms ModelStatus) ETA(position int) (float64, bool) {
	if ms.AvgJobSeconds <= 0 {
		return 0, false
	}
	slots := max(ms.Slots, 1)
	eta := float64(position/slots+1) * ms.AvgJobSeconds
	if ms.State != ModelReady && ms.State != ModelBusy {
		eta += ms.AvgLoadSeconds
	}
	return eta, true
}

// lastPID is the engine's process, or for a one-shot engine its latest one.
func lastPID(e Engine) int {
	if e == nil {
		return 0
	}
	if l, ok := e.(engine.LastPIDer); ok {
		return l.LastPID()
	}
	return e.PID()
}

// engineGone reports whether i's process has already exited.
func engineGone(i *instance) bool {
	if i.eng == nil {
		return false
	}
	select {
	case <-i.eng.Done():
		return true
	default:
		return false
	}
}

func errString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// headsFunc returns a lookup of the durable queues' heads that reads the
// store at most once, on first use.
func (s *Scheduler) headsFunc() func(model string) headInfo {
	var heads map[string]store.Job
	read := false
	return func(model string) headInfo {
		if !read {
			read = true
			h, err := s.store.Heads()
			if err != nil {
				s.log.Error("read queue heads", "err", err)
			}
			heads = h
		}
		j, ok := heads[model]
		return headInfo{ok: ok, priority: s.effective(j.Priority, j.CreatedAt), since: j.CreatedAt}
	}
}

// lanes is about how many of the waiting models fit side by side: each
// device's capacity beside pinned engines over their mean reservation.
func (s *Scheduler) lanes(cands []candidate) int {
	need := 0
	for _, c := range cands {
		need += s.reservation(s.st.models[c.Model])
	}
	if len(cands) == 0 || need <= 0 {
		return 1
	}
	need = max(need/len(cands), 1)
	n := 0
	for d := range s.st.devs {
		n += max(s.capacityOn(d)-s.pinnedOn(d, nil), 0) / need
	}
	return max(n, 1)
}
