package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// effects carries out what the loop decides. The decision code (handleReq,
// handleEvent, plan) touches processes, slow store writes and time only
// through it and Config.NowFunc; each effect reports back as events. The
// daemon uses goroutines (liveEffects); the simulation tests run the same
// decisions against simulated engines and a simulated clock.
type effects interface {
	// load waits for the memory of the exited engines pids to show free,
	// starts i's engine, and reports launched, loadDone and (when the
	// process ends) instExited.
	load(ctx context.Context, i *instance, pids []int)
	// terminate stops i's engine; instExited follows.
	terminate(i *instance)
	// runSlot claims the next job of i's model and runs it, reporting
	// jobStarted and slotDone.
	runSlot(ctx context.Context, i *instance)
	// failQueued fails every queued job of model, then reports failedQueued.
	failQueued(model, reason string)
	// persistLearned records a model's learned VRAM figure.
	persistLearned(model, key string, mb int)
}

// liveEffects runs effects in goroutines against real engines and the
// store, counted in Scheduler.effects so that Stop can wait for them.
type liveEffects struct{ s *Scheduler }

func (fx liveEffects) load(ctx context.Context, i *instance, pids []int) {
	s := fx.s
	m := i.model.Model // a copy: the loop goes on changing its own
	m.Placement = i.place
	meters := make([]Meter, len(i.place))
	for k, p := range i.place {
		meters[k] = s.st.devs[p.Device].Meter
	}
	timeout, poll := s.cfg.ReleaseTimeout, s.cfg.ReleasePoll // read here, in the loop
	s.effects.Go(func() {
		s.waitReleased(ctx, m.Name, pids, m.Placement, meters, timeout, poll)
		eng, err := s.launcher.Launch(ctx, m.spec())
		if err != nil {
			s.emit(loadDone{inst: i, err: err})
			return
		}
		s.emit(launched{inst: i, eng: eng})
		s.effects.Go(func() { // the exit watcher: ends with the process
			<-eng.Done()
			s.emit(instExited{inst: i})
		})
		s.emit(loadDone{inst: i, err: eng.WaitReady(ctx)})
	})
}

func (fx liveEffects) terminate(i *instance) {
	s, eng := fx.s, i.eng
	s.effects.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			s.log.Warn("stop engine", "model", i.model.Name, "err", err)
		}
	})
}

func (fx liveEffects) runSlot(ctx context.Context, i *instance) {
	fx.s.effects.Go(func() { fx.s.runSlot(ctx, i) })
}

func (fx liveEffects) failQueued(model, reason string) {
	s := fx.s
	s.effects.Go(func() {
		n := s.failQueuedNow(model, reason)
		s.emit(failedQueued{model: model, n: n})
	})
}

func (fx liveEffects) persistLearned(model, key string, mb int) {
	s := fx.s
	ls, ok := s.store.(LearnedStore)
	if !ok {
		return
	}
	s.effects.Go(func() {
		if err := ls.SetLearnedVRAM(key, mb); err != nil {
			s.log.Warn("persist learned VRAM", "model", model, "err", err)
		}
	})
}

// runSlot claims the next job of i's model, runs it and records the outcome.
func (s *Scheduler) runSlot(ctx context.Context, i *instance) {
	if s.persist.overCap.Load() {
		s.persist.pause() // held results over the cap: start nothing new
		s.emit(slotDone{inst: i, empty: true})
		return
	}
	job, err := s.store.Claim(i.model.Name)
	if err != nil {
		empty := errors.Is(err, store.ErrEmpty)
		if !empty && retryable(err) {
			s.persist.claimFailed(err)
			s.persist.pause() // do not let the loop hammer a failing store
		}
		s.emit(slotDone{inst: i, empty: empty, err: err})
		return
	}
	s.persist.claimOK()
	if engineGone(i) {
		// The engine died between dispatch and claim: the job never ran, so
		// it goes back without counting an attempt. A release the store
		// refuses is held and retried (the persister tells the loop once
		// the job is queued again), not left running until a restart.
		err := s.store.Release(job.ID)
		if err != nil && s.persist.hold(pendingWrite{kind: writeRelease, id: job.ID, model: job.Model}, err) {
			err = nil
		}
		s.emit(slotDone{inst: i, err: err})
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	run := &jobRun{id: job.ID, model: job.Model, inst: i, cancel: cancel}
	s.emit(jobStarted{run: run})
	result, err := runJob(jctx, i.eng, job, func(p Progress) {
		run.record(p)
		s.bus.Publish(Event{Type: EvJobProgress, Model: job.Model, JobID: job.ID, Tokens: p.Tokens, Step: p.Step, Steps: p.Steps, Chunk: p.Chunk})
	})
	outcome, ferr := s.finish(jctx, i, job, result, err)
	var u Usage
	if outcome == store.JobStateCompleted {
		u, _ = engine.FindUsage(result)
	}
	s.emit(slotDone{inst: i, run: run, outcome: outcome, err: ferr, usage: u})
}

// runJob runs job on eng: a prompt job through Run, an endpoint/body job
// through the engine's Forwarder (an engine without one rejects it).
func runJob(ctx context.Context, eng Engine, job store.Job, progress func(Progress)) ([]byte, error) {
	ej := engine.Job{ID: job.ID, Model: job.Model, Prompt: job.Prompt, Params: job.Params, Endpoint: job.Endpoint, Body: job.Body}
	if ej.Endpoint == "" {
		return eng.Run(ctx, ej, progress)
	}
	f, ok := eng.(engine.Forwarder)
	if !ok {
		return nil, fmt.Errorf("%w: the engine of %s takes no endpoint/body jobs", ErrRejected, job.Model)
	}
	return f.Forward(ctx, ej.Endpoint, ej.Body)
}

// spec is what the Launcher is told about an instance of m: its engine and
// the devices of its placement.
func (m Model) spec() engine.Spec {
	sp := engine.Spec{Model: m.Name, Engine: m.Engine, Kind: m.Kind}
	for _, p := range m.Placement {
		sp.Devices = append(sp.Devices, p.ID)
		sp.SharesMB = append(sp.SharesMB, p.MB)
	}
	return sp
}
