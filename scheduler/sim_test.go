package scheduler

import (
	"container/heap"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// The simulation runs the scheduler's real decision code (handleReq,
// handleEvent, plan) on one goroutine with a simulated clock, store, meter
// and engines. Engines take time to load, hold VRAM until some time after
// they exit, and fail on the seed's say-so. After every step it checks the
// invariants; a failure names the seed to replay.

var (
	simSeeds = flag.Int("sim.seeds", 200, "number of random seeds TestSim runs")
	simSeed  = flag.Uint64("sim.seed", 0, "run TestSim with this one seed (replay)")
)

// simModel is a configured model in a simulation.
type simModel struct {
	name     string
	mb       int
	loadTime time.Duration
	slots    int
	pinned   bool
	gpus     []int
}

// simArrival is a job that arrives at a given time.
type simArrival struct {
	at       time.Duration
	model    string
	prio     int
	duration time.Duration
	// interactive arrivals are OpenAI-style requests: a waiter for a slot
	// that holds it for duration, not a stored job.
	interactive bool
}

// simFaults sets how often things go wrong while faults are on.
type simFaults struct {
	until        time.Duration // no faults after this sim time
	loadFail     float64       // a load fails
	crashPerJob  float64       // the engine dies while a job runs
	slowRelease  time.Duration // memory comes back up to this long after exit
	slowStop     float64       // the engine ignores SIGTERM (killed after a grace)
	cancelPerJob float64       // the client cancels the job at a random time
}

type simSpec struct {
	seed        uint64
	models      []simModel
	budget      int   // one device of this size, unless devices is set
	devices     []int // sizes of several devices
	policy      Policy
	maxWait     time.Duration
	maxAttempts int
	aging       time.Duration
	arrivals    []simArrival
	faults      simFaults
	shutdownAt  time.Duration // 0: no shutdown
	// skipReleaseWait makes loads ignore memory still held by exited
	// engines: a deliberate bug, to show the invariants catch it.
	skipReleaseWait bool
	limit           time.Duration // sim time after which unfinished jobs count as stuck
}

// simEvent is one thing scheduled to happen.
type simEvent struct {
	at  time.Time
	seq uint64
	fn  func()
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(a, b int) bool {
	if !q[a].at.Equal(q[b].at) {
		return q[a].at.Before(q[b].at)
	}
	return q[a].seq < q[b].seq
}
func (q simQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// sim is one simulated run.
type sim struct {
	spec    simSpec
	rng     *rand.Rand
	start   time.Time
	now     time.Time
	q       simQueue
	seq     uint64
	s       *Scheduler
	st      *simStore
	engines map[int]*simEngine
	nextPID int
	ctx     context.Context

	lostDevs  map[int]bool // devices whose meter fails
	durations map[string]time.Duration
	asks      []*simAsk // interactive requests
	running   map[string]bool
	errs      []string
	steps     int

	// Figures for the trace benchmarks.
	loads      int
	waits      []time.Duration
	lastFinish time.Time
}

// simEngine is an engine process in the simulation.
type simEngine struct {
	sim       *sim
	pid       int
	model     string
	mb        map[int]int // device → MiB
	exited    bool
	releaseAt time.Time
	done      chan struct{}
	err       error
	onExit    []func() // running jobs learn of the exit
}

func (e *simEngine) WaitReady(context.Context) error { return errors.New("sim: not used") }
func (e *simEngine) Done() <-chan struct{}           { return e.done }
func (e *simEngine) Err() error                      { return e.err }
func (e *simEngine) Stop(context.Context) error      { return errors.New("sim: not used") }
func (e *simEngine) PID() int                        { return e.pid }
func (e *simEngine) URL() string                     { return "http://sim.invalid" }
func (e *simEngine) Run(context.Context, engine.Job, func(Progress)) ([]byte, error) {
	return nil, errors.New("sim: not used")
}

// exit ends the process: its memory comes back some time later, and the
// loop hears of it.
func (e *simEngine) exit(err error, inst *instance) {
	if e.exited {
		return
	}
	x := e.sim
	e.exited, e.err = true, err
	e.releaseAt = x.now.Add(x.releaseDelay())
	close(e.done)
	for _, f := range e.onExit {
		x.after(0, f)
	}
	x.after(0, func() { x.s.handleEvent(instExited{inst: inst}) })
}

func newSim(spec simSpec) *sim {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	x := &sim{spec: spec, rng: rand.New(rand.NewPCG(spec.seed, spec.seed^0x9e3779b97f4a7c15)), start: start, now: start,
		engines: map[int]*simEngine{}, durations: map[string]time.Duration{}, running: map[string]bool{}, ctx: context.Background()}
	x.st = newSimStore(func() time.Time { return x.now })
	x.st.aging = spec.aging
	if len(spec.devices) == 0 {
		spec.devices = []int{spec.budget}
	}
	cfg := Config{TotalMB: spec.budget, Policy: spec.policy, MaxWait: spec.maxWait, MaxAttempts: spec.maxAttempts, Aging: spec.aging,
		ShutdownGrace: 5 * time.Second, ReleaseTimeout: 10 * time.Second, NowFunc: func() time.Time { return x.now }}
	for _, m := range spec.models {
		cfg.Models = append(cfg.Models, Model{Name: m.name, Kind: engine.KindLLM, VRAMMB: m.mb, Slots: m.slots, Pinned: m.pinned, GPUs: m.gpus})
	}
	for d, size := range spec.devices {
		cfg.Devices = append(cfg.Devices, Device{ID: fmt.Sprint(d), TotalMB: size, Meter: simMeter{x, d}})
	}
	x.spec = spec
	s, err := New(cfg, x.st, nil, nil, nil)
	if err != nil {
		panic(err)
	}
	s.fx = simFx{x}
	x.s = s
	return x
}

// after schedules fn d from now.
func (x *sim) after(d time.Duration, fn func()) {
	x.seq++
	heap.Push(&x.q, simEvent{at: x.now.Add(d), seq: x.seq, fn: fn})
}

func (x *sim) chance(p float64) bool {
	return p > 0 && x.faultsOn() && x.rng.Float64() < p
}

func (x *sim) faultsOn() bool { return x.now.Sub(x.start) < x.spec.faults.until }

func (x *sim) releaseDelay() time.Duration {
	if x.faultsOn() && x.spec.faults.slowRelease > 0 {
		return time.Duration(x.rng.Int64N(int64(x.spec.faults.slowRelease)))
	}
	return 50 * time.Millisecond
}

func (x *sim) model(name string) simModel {
	for _, m := range x.spec.models {
		if m.name == name {
			return m
		}
	}
	panic("sim: unknown model " + name)
}

// run drives the simulation to its end and returns the invariant failures.
func (x *sim) run() []string {
	for _, a := range x.spec.arrivals {
		x.after(a.at, func() { x.submit(a) })
	}
	var tick func()
	tick = func() {
		x.s.readMeter(x.ctx)
		if len(x.q) > 0 || x.pending() {
			x.after(250*time.Millisecond, tick)
		}
	}
	x.after(0, tick)
	if x.spec.shutdownAt > 0 {
		x.after(x.spec.shutdownAt, func() {
			x.s.beginShutdown()
			x.after(x.s.cfg.ShutdownGrace, x.s.forceStop)
		})
	}
	x.s.boot(x.ctx)
	x.step()
	deadline := x.start.Add(x.spec.limit)
	for len(x.q) > 0 && len(x.errs) == 0 {
		e := heap.Pop(&x.q).(simEvent)
		if e.at.After(deadline) {
			break
		}
		x.now = e.at
		e.fn()
		x.step()
		if x.s.st.closing && x.s.stopped() {
			break
		}
	}
	x.checkEnd()
	return x.errs
}

// pending reports whether some job has not reached a final state.
func (x *sim) pending() bool {
	for _, q := range x.asks {
		if !q.gone && (!q.answered || (q.lease != nil && !q.done)) {
			return true
		}
	}
	for _, j := range x.st.jobs {
		if !j.State.Final() {
			return true
		}
	}
	return false
}

// step lets the scheduler plan and checks the invariants.
func (x *sim) step() {
	x.steps++
	x.pump()
	for _, q := range x.asks {
		if q.lease != nil && !q.done && q.lease.Context().Err() != nil {
			q.lease.Finish(context.Cause(q.lease.Context())) // its engine died
			q.done = true
		}
	}
	x.pump()
	if !x.s.stopped() {
		x.s.plan(x.ctx)
	}
	for _, q := range x.asks {
		x.checkAsk(q)
	}
	x.pump()
	for d, size := range x.spec.devices {
		if reserved, _, _ := x.s.ledgerOn(d); reserved > x.s.capacityOn(d) {
			x.failf("ledger of GPU %d: %d MiB reserved > budget %d MiB", d, reserved, x.s.capacityOn(d))
		}
		if held := x.heldMB(d); held > size {
			x.failf("GPU %d: engines hold %d MiB > %d MiB (%s)", d, held, size, x.holders())
		}
	}
}

func (x *sim) failf(format string, args ...any) {
	x.errs = append(x.errs, fmt.Sprintf("t=%v step %d: ", x.now.Sub(x.start), x.steps)+fmt.Sprintf(format, args...))
}

// heldMB is the memory device d would show used: live engines and exited
// ones whose memory has not come back.
func (x *sim) heldMB(d int) int {
	n := 0
	for _, e := range x.engines {
		if !e.exited || x.now.Before(e.releaseAt) {
			n += e.mb[d]
		}
	}
	return n
}

func (x *sim) holders() string {
	var out []string
	for _, pid := range slices.Sorted(mapsKeys(x.engines)) {
		e := x.engines[pid]
		if !e.exited || x.now.Before(e.releaseAt) {
			out = append(out, fmt.Sprintf("%s/%d exited=%v", e.model, e.pid, e.exited))
		}
	}
	return fmt.Sprint(out)
}

func mapsKeys[V any](m map[int]V) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// simAsk is one interactive request in the simulation.
type simAsk struct {
	w        *waiter
	duration time.Duration
	lease    *Lease
	answered bool // got a lease or an error
	gone     bool // the client left while waiting
	done     bool // its lease was given back
	err      error
}

// ask files an interactive request, as Acquire does; the client may leave
// while it waits.
func (x *sim) ask(a simArrival) {
	w := &waiter{model: a.model, priority: a.prio, reply: make(chan acquireResult, 1)}
	q := &simAsk{w: w, duration: a.duration}
	if err := x.s.enqueueWaiter(w); err != nil {
		q.answered, q.err = true, err
	}
	x.asks = append(x.asks, q)
	if !q.answered && x.chance(x.spec.faults.cancelPerJob) {
		x.after(time.Duration(x.rng.Int64N(int64(3*time.Second))), func() {
			if !q.answered {
				x.s.abandon(w)
				q.gone = true
				x.checkAsk(q) // a lease granted in the same step goes back
			}
		})
	}
}

// checkAsk takes a request's answer once it is there; a lease is held for
// the request's duration, or given back at once by a client that left.
func (x *sim) checkAsk(q *simAsk) {
	if q.answered && !q.gone {
		return
	}
	select {
	case res := <-q.w.reply:
		q.answered, q.lease, q.err = true, res.lease, res.err
	default:
		return
	}
	if q.lease == nil {
		return
	}
	l := q.lease
	if q.gone {
		l.Finish(context.Canceled)
		q.done = true
		return
	}
	x.after(q.duration, func() {
		l.Finish(nil)
		q.done = true
	})
}

// pump delivers what effects and leases emitted to the loop's event channel.
func (x *sim) pump() {
	for {
		select {
		case ev := <-x.s.evCh:
			x.s.handleEvent(ev)
		default:
			return
		}
	}
}

// submit is POST /jobs: admit, enqueue, notify; maybe cancelled later.
func (x *sim) submit(a simArrival) {
	if a.interactive {
		x.ask(a)
		return
	}
	if x.s.admit(a.model) != nil {
		return
	}
	j := x.st.enqueue(a.model, a.prio, x.spec.maxAttempts)
	x.durations[j.ID] = a.duration
	x.s.handleReq(queuedReq{model: a.model})
	if x.chance(x.spec.faults.cancelPerJob) {
		x.after(time.Duration(x.rng.Int64N(int64(3*time.Second))), func() { x.cancel(j.ID) })
	}
}

// cancel is DELETE /jobs/{id}: the store first, then the scheduler.
func (x *sim) cancel(id string) {
	if x.st.cancel(id) != nil {
		return
	}
	x.s.handleReq(cancelReq{id: id, reply: make(chan bool, 1)})
}

// checkEnd checks that every job was accounted for.
func (x *sim) checkEnd() {
	if len(x.errs) > 0 {
		return
	}
	shutdown := x.spec.shutdownAt > 0
	for _, id := range x.st.ids {
		j := x.st.jobs[id]
		switch {
		case shutdown && j.State == store.JobStateRunning:
			x.failf("after shutdown job %s is still running", id)
		case !shutdown && !j.State.Final():
			x.failf("job %s (%s) never finished: %s, attempts %d", id, j.Model, j.State, j.Attempts)
		}
	}
	if shutdown {
		for _, e := range x.engines {
			if !e.exited {
				x.failf("after shutdown engine %s/%d is alive", e.model, e.pid)
			}
		}
	}
	if len(x.running) > 0 {
		x.failf("jobs still marked running: %v", x.running)
	}
	for k, q := range x.asks {
		switch {
		case q.gone:
		case !q.answered && !shutdown:
			x.failf("interactive request %d for %s never got a slot or an error", k, q.w.model)
		case q.lease != nil && !q.done:
			x.failf("interactive request %d for %s still holds its slot", k, q.w.model)
		}
	}
	if n := len(x.s.st.leases); n > 0 && !shutdown {
		x.failf("%d leases never returned", n)
	}
}

// simMeter reads simulated GPU d as NVML would.
type simMeter struct {
	x *sim
	d int
}

func (m simMeter) Read(context.Context) (vram.Reading, error) {
	x, d := m.x, m.d
	if x.lostDevs[d] {
		return vram.Reading{}, errors.New("nvml: GPU is lost")
	}
	r := vram.Reading{Source: vram.SourceNVML, TotalMB: x.spec.devices[d], ByPID: map[int]int{}}
	for pid, e := range x.engines {
		if mb := e.mb[d]; mb > 0 && (!e.exited || x.now.Before(e.releaseAt)) {
			r.ByPID[pid] = mb
		}
	}
	r.FreeMB = x.spec.devices[d] - x.heldMB(d)
	return r, nil
}

// simFx carries out the scheduler's effects in simulated time.
type simFx struct{ x *sim }

func (fx simFx) load(ctx context.Context, i *instance, pids []int) {
	x := fx.x
	wait := time.Duration(0)
	if x.spec.skipReleaseWait {
		pids = nil
	}
	for _, pid := range pids {
		if e := x.engines[pid]; e != nil && e.releaseAt.After(x.now) && sharesDevice(e, i.place) {
			wait = max(wait, min(e.releaseAt.Sub(x.now), x.s.cfg.ReleaseTimeout))
		}
	}
	x.after(wait, func() {
		if ctx.Err() != nil {
			x.s.handleEvent(loadDone{inst: i, err: ctx.Err()})
			return
		}
		m := x.model(i.model.Name)
		x.nextPID++
		e := &simEngine{sim: x, pid: x.nextPID, model: m.name, mb: map[int]int{}, done: make(chan struct{})}
		for _, p := range i.place {
			e.mb[p.Device] = m.mb * p.MB / max(i.reservedMB, 1) // what it really holds there
		}
		x.engines[e.pid] = e
		x.loads++
		x.s.handleEvent(launched{inst: i, eng: e})
		fail := x.chance(x.spec.faults.loadFail)
		x.after(m.loadTime, func() {
			switch {
			case e.exited:
				x.s.handleEvent(loadDone{inst: i, err: fmt.Errorf("engine exited while loading: %w", errString2(e.err))})
			case fail:
				e.exit(errors.New("exit status 1: failed to load model"), i)
				x.s.handleEvent(loadDone{inst: i, err: errors.New("exiting due to model loading error")})
			case ctx.Err() != nil:
				e.exit(nil, i)
				x.s.handleEvent(loadDone{inst: i, err: ctx.Err()})
			default:
				x.s.handleEvent(loadDone{inst: i})
			}
		})
	})
}

// sharesDevice reports whether e holds memory on a device of place.
func sharesDevice(e *simEngine, place []Placement) bool {
	for _, p := range place {
		if e.mb[p.Device] > 0 {
			return true
		}
	}
	return false
}

func errString2(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

func (fx simFx) terminate(i *instance) {
	x := fx.x
	e := i.eng.(*simEngine)
	if i.inflight > 0 && !x.s.st.forced {
		x.failf("busy instance of %s stopped (%d slots in use, reason %q)", i.model.Name, i.inflight, i.stopReason)
	}
	grace := 20 * time.Millisecond
	if x.chance(x.spec.faults.slowStop) {
		grace = 2 * time.Second // SIGTERM ignored: SIGKILL after the grace
	}
	x.after(grace, func() { e.exit(nil, i) })
}

func (fx simFx) runSlot(ctx context.Context, i *instance) {
	x := fx.x
	x.after(0, func() {
		job, err := x.st.Claim(i.model.Name)
		if err != nil {
			x.s.handleEvent(slotDone{inst: i, empty: errors.Is(err, store.ErrEmpty), err: err})
			return
		}
		if engineGone(i) {
			x.s.handleEvent(slotDone{inst: i, err: x.st.Release(job.ID)})
			return
		}
		if x.running[job.ID] {
			x.failf("job %s runs twice at once", job.ID)
		}
		x.running[job.ID] = true
		if job.Attempts == 1 {
			x.waits = append(x.waits, x.now.Sub(job.CreatedAt))
		}
		e := i.eng.(*simEngine)
		jctx, cancel := context.WithCancelCause(ctx)
		finished := false
		var run *jobRun
		finish := func() {
			if finished {
				return
			}
			finished = true
			delete(x.running, job.ID)
			var runErr error
			switch {
			case e.exited:
				runErr = errors.New("engine is gone")
			case context.Cause(jctx) != nil:
				runErr = context.Cause(jctx)
			}
			outcome, ferr := x.s.finish(jctx, i, job, nil, runErr)
			cancel(nil)
			if outcome == store.JobStateCompleted {
				x.lastFinish = x.now
			}
			x.s.handleEvent(slotDone{inst: i, run: run, outcome: outcome, err: ferr})
		}
		run = &jobRun{id: job.ID, model: job.Model, inst: i, cancel: func(cause error) {
			cancel(cause)
			x.after(0, finish)
		}}
		x.s.handleEvent(jobStarted{run: run})
		e.onExit = append(e.onExit, finish)
		d := x.durations[job.ID]
		if x.chance(x.spec.faults.crashPerJob) {
			x.after(time.Duration(x.rng.Int64N(int64(d)+1)), func() { e.exit(errors.New("signal: killed (crash)"), i) })
		}
		x.after(d, finish)
	})
}

func (fx simFx) failQueued(model, reason string) {
	x := fx.x
	x.after(0, func() {
		n := x.s.failQueuedNow(model, reason)
		x.s.handleEvent(failedQueued{model: model, n: n})
	})
}

func (fx simFx) persistLearned(model, key string, mb int) {}
