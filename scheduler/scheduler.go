package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// Errors returned by Admit and other requests.
var (
	ErrUnknownModel = errors.New("unknown model")
	ErrUnavailable  = errors.New("model unavailable")
	ErrTooLarge     = errors.New("model does not fit the VRAM budget")
	ErrStopped      = errors.New("scheduler stopped")
	// ErrRejected marks a job error that retrying cannot fix; it is
	// engine.ErrRejected, which engines wrap.
	ErrRejected = engine.ErrRejected
)

// Policy names a scheduling policy.
type Policy string

// Policies.
const (
	PolicyBatch Policy = "batch"
	PolicyFIFO  Policy = "fifo"
)

// Model is one configured model as the scheduler sees it.
type Model struct {
	Name string
	Kind engine.Kind
	// Engine is the registry name of the model's engine ("llama-server",
	// "sd-cli", "command", …), given to the Launcher in engine.Spec.
	Engine string
	VRAMMB int // configured reservation; 0 = use EstimateMB
	// EstimateMB is the estimate from the model file; used when VRAMMB is 0.
	// When both are 0 the model reserves the whole budget.
	EstimateMB int
	// LearnedMB is the peak VRAM measured for the model's engine on an
	// earlier load (kept in the store under LearnKey); when set it is the
	// reservation. The scheduler raises it as it measures.
	LearnedMB int
	// LearnKey names the learned figure in the store; default Name. Main
	// derives it from the model's file and engine options, so that a changed
	// configuration starts from its estimate again.
	LearnKey string
	Slots    int  // concurrent jobs per instance (llama-server --parallel)
	Pinned   bool // never an eviction victim
	// GPUs are the devices (positions in Config.Devices) the model must
	// use; several split it evenly. Empty: the scheduler picks one device.
	GPUs []int
	// Placement is set on the copy of the Model an instance is started
	// from: the devices and shares of this instance.
	Placement []Placement
	Preload   bool // loaded at start
	TTL       time.Duration
}

// Config holds the scheduler's settings.
type Config struct {
	Models  []Model
	TotalMB int // used when the meter's reading is unavailable
	// Devices are the GPUs, each with its own ledger. Empty: one device of
	// TotalMB read by the meter given to New.
	Devices        []Device
	SafetyMarginMB int
	Policy         Policy
	MaxWait        time.Duration
	MaxAttempts    int
	// MaxQueue bounds the interactive requests waiting for a slot together
	// with the queued jobs (scheduling.max_queue); Acquire returns
	// store.ErrQueueFull beyond it. 0: unbounded.
	MaxQueue int
	// Aging raises a waiting job's priority by one per Aging waited when
	// the loop picks what to load next (the store does the same within a
	// model's queue). 0 disables it.
	Aging time.Duration
	// ShutdownGrace is how long Stop lets running jobs finish before it
	// requeues them.
	ShutdownGrace time.Duration
	// MeterInterval is how often the meter is read. Default 5s.
	MeterInterval time.Duration
	// MeterTimeout bounds one read of a device's meter: a driver call that
	// hangs counts as a failed read instead of stopping the loop. Default 5s.
	MeterTimeout time.Duration
	// ReleaseTimeout bounds the wait, before a load, for the memory of
	// engines that just exited to show free in the meter. Default 10s.
	ReleaseTimeout time.Duration
	// ReleasePoll is how often that wait reads the meter. Default 100ms.
	ReleasePoll time.Duration
	// NowFunc is the clock; default time.Now.
	NowFunc func() time.Time
	// Fleet, if set, is the other nodes sharing the queue (fleet.go).
	Fleet Fleet
}

// JobStore is what the scheduler needs of the durable queue.
type JobStore interface {
	Claim(model string) (store.Job, error)
	Complete(id string, result []byte) error
	Requeue(id, reason string) (store.JobState, error)
	Release(id string) error
	Fail(id, reason string) error
	Depths() (map[string]int, error)
	Heads() (map[string]store.Job, error)
	List(f store.ListFilter) ([]store.Job, error)
}

// Engine is one running model server; see engine.Engine.
type Engine = engine.Engine

// Launcher starts engines for models; see engine.Launcher. The daemon gives
// the scheduler an *engine.Registry.
type Launcher = engine.Launcher

// Meter reads GPU memory.
type Meter interface {
	Read(ctx context.Context) (vram.Reading, error)
}

// Progress is a running job's progress.
type Progress = engine.Progress

// Scheduler runs the loop; see the package documentation.
type Scheduler struct {
	cfg      Config
	store    JobStore
	launcher Launcher
	meter    Meter
	log      *slog.Logger
	bus      *Bus
	now      func() time.Time

	reqCh chan any
	evCh  chan any
	done  chan struct{} // closed when the loop has returned
	// exiting closes when the loop has stopped taking requests, before it
	// waits for the persister's last try.
	exiting chan struct{}
	// effects counts the goroutines of liveEffects; Stop waits for them
	// after the loop (effects.go).
	effects sync.WaitGroup

	beat    atomic.Int64 // unix nanos of the loop's last iteration
	started atomic.Bool

	// st is owned by the loop goroutine.
	st *state
	fx effects
	// persist holds and retries job outcomes the store refused (persist.go).
	persist *persister
}

// New validates cfg and returns a Scheduler; call Start to run it.
func New(cfg Config, st JobStore, l Launcher, m Meter, log *slog.Logger) (*Scheduler, error) {
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.MeterTimeout <= 0 {
		cfg.MeterTimeout = 5 * time.Second
	}
	if cfg.MeterInterval <= 0 {
		cfg.MeterInterval = 5 * time.Second
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 10 * time.Second
	}
	if cfg.ReleasePoll <= 0 {
		cfg.ReleasePoll = 100 * time.Millisecond
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyBatch
	}
	if cfg.Policy != PolicyBatch && cfg.Policy != PolicyFIFO {
		return nil, fmt.Errorf("scheduler: unknown policy %q", cfg.Policy)
	}
	if len(cfg.Devices) == 0 {
		cfg.Devices = []Device{{TotalMB: cfg.TotalMB}}
		if m != nil {
			cfg.Devices[0].Meter = m
		}
	}
	for k, d := range cfg.Devices {
		if d.TotalMB-cfg.SafetyMarginMB <= 0 {
			return nil, fmt.Errorf("scheduler: device %d: budget %d−%d MiB is not positive", k, d.TotalMB, cfg.SafetyMarginMB)
		}
	}
	for _, mo := range cfg.Models {
		for _, g := range mo.GPUs {
			if g < 0 || g >= len(cfg.Devices) {
				return nil, fmt.Errorf("scheduler: model %s: GPU %d is not one of the %d devices", mo.Name, g, len(cfg.Devices))
			}
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		cfg:      cfg,
		store:    st,
		launcher: l,
		meter:    m,
		log:      log,
		bus:      NewBus(),
		now:      cfg.NowFunc,
		reqCh:    make(chan any),
		evCh:     make(chan any, 256),
		done:     make(chan struct{}),
		exiting:  make(chan struct{}),
	}
	s.st = newState(cfg)
	s.fx = liveEffects{s}
	s.persist = newPersister(s)
	return s, nil
}

// Bus returns the event bus.
func (s *Scheduler) Bus() *Bus { return s.bus }

// Start runs the loop until Stop. It reads the queue once to learn what is
// waiting. Calling Start twice is a no-op.
func (s *Scheduler) Start(ctx context.Context) {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	s.beat.Store(s.now().UnixNano())
	go s.run(context.WithoutCancel(ctx))
}

// Stop lets running jobs finish until ctx ends (or ShutdownGrace, whichever
// comes first), then returns the jobs still running to the queue, stops every
// engine and waits for them to exit. Safe to call more than once.
func (s *Scheduler) Stop(ctx context.Context) error {
	if !s.started.Load() {
		return nil
	}
	req := stopReq{reply: make(chan struct{})}
	select {
	case s.reqCh <- req:
	case <-s.done:
		return s.joinEffects()
	}
	select {
	case <-s.done:
		return s.joinEffects()
	case <-ctx.Done():
		// Force: the loop is told to give up waiting for jobs.
		select {
		case s.reqCh <- forceStopReq{}:
		case <-s.done:
		}
		<-s.done
		return errors.Join(fmt.Errorf("scheduler stop: %w", ctx.Err()), s.joinEffects())
	}
}

// effectsJoinTimeout bounds Stop's wait for the effect goroutines once the
// loop has returned. By then every engine has exited and every job slot
// has reported, so what is left (an engine's Stop returning, a learned
// figure being written) ends in moments; the bound only keeps a wedged
// one from holding the shutdown for ever.
const effectsJoinTimeout = 30 * time.Second

// joinEffects waits for the effect goroutines, up to effectsJoinTimeout,
// so that none touches the store or an engine after Stop returns.
func (s *Scheduler) joinEffects() error {
	done := make(chan struct{})
	go func() {
		s.effects.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(effectsJoinTimeout):
		return fmt.Errorf("scheduler stop: engine or store work still running after %s", effectsJoinTimeout)
	}
}

// LastBeat is when the loop last ran; /health reports degraded when stale.
func (s *Scheduler) LastBeat() time.Time { return time.Unix(0, s.beat.Load()) }

// ask sends a request to the loop and waits for the reply.
func ask[T any](ctx context.Context, s *Scheduler, build func(chan T) any) (T, error) {
	var zero T
	reply := make(chan T, 1)
	select {
	case s.reqCh <- build(reply):
	case <-s.done:
		return zero, ErrStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case v := <-reply:
		return v, nil
	case <-s.done:
		return zero, ErrStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Admit says whether a job for model may be queued: nil, or an error wrapping
// ErrUnknownModel, ErrUnavailable (with the reason), ErrTooLarge or
// store.ErrQueueFull (Config.MaxQueue jobs and interactive requests wait).
func (s *Scheduler) Admit(ctx context.Context, model string) error {
	err, aerr := ask(ctx, s, func(r chan error) any { return admitReq{model: model, reply: r} })
	if aerr != nil {
		return aerr
	}
	return err
}

// Notify tells the loop that a job for model was queued. It never blocks for
// long: the loop is always receiving.
func (s *Scheduler) Notify(model string) {
	select {
	case s.reqCh <- queuedReq{model: model}:
	case <-s.exiting:
	}
}

// Cancel aborts the running job id if it runs here (the store has already
// marked it cancelled). It reports whether a run was aborted.
func (s *Scheduler) Cancel(ctx context.Context, id string) (bool, error) {
	return ask(ctx, s, func(r chan bool) any { return cancelReq{id: id, reply: r} })
}

// Snapshot returns the current view of models, ledger and running jobs.
func (s *Scheduler) Snapshot(ctx context.Context) (Snapshot, error) {
	return ask(ctx, s, func(r chan Snapshot) any { return snapshotReq{reply: r} })
}

// JobProgress returns the progress of a running job, if it runs here.
func (s *Scheduler) JobProgress(ctx context.Context, id string) (Progress, bool, error) {
	type pr struct {
		p  Progress
		ok bool
	}
	v, err := ask(ctx, s, func(r chan pr) any {
		return progressReq{id: id, reply: func(p Progress, ok bool) { r <- pr{p, ok} }}
	})
	return v.p, v.ok, err
}

// JobText returns the text a running LLM job has generated so far and the
// number of chunks it holds (Progress.Tokens of the last chunk included), if
// the job runs here. A stream that attaches late subscribes to the bus first,
// then calls JobText, then skips progress events with Tokens <= that number.
func (s *Scheduler) JobText(ctx context.Context, id string) (string, int, bool, error) {
	type tr struct {
		text string
		n    int
		ok   bool
	}
	v, err := ask(ctx, s, func(r chan tr) any {
		return textReq{id: id, reply: func(t string, n int, ok bool) { r <- tr{t, n, ok} }}
	})
	return v.text, v.n, v.ok, err
}

// Load asks for model to be loaded now (a preloading hint): it loads if it
// fits beside busy work, evicting only idle instances with nothing queued;
// otherwise the wish waits until it fits. Errors as for Admit.
func (s *Scheduler) Load(ctx context.Context, model string) error {
	err, aerr := ask(ctx, s, func(r chan error) any { return loadReq{model: model, reply: r} })
	if aerr != nil {
		return aerr
	}
	return err
}

// Unload drains model's instance (running jobs finish, nothing new is
// claimed) and then stops it. Queued jobs for the model stay queued and load
// it again. Returns an error wrapping ErrUnknownModel for unknown names.
func (s *Scheduler) Unload(ctx context.Context, model string) error {
	err, aerr := ask(ctx, s, func(r chan error) any { return unloadReq{model: model, reply: r} })
	if aerr != nil {
		return aerr
	}
	return err
}

// Requests to the loop.
type (
	loadReq struct {
		model string
		reply chan error
	}
	unloadReq struct {
		model string
		reply chan error
	}
	stopReq      struct{ reply chan struct{} }
	forceStopReq struct{}
	admitReq     struct {
		model string
		reply chan error
	}
	queuedReq struct{ model string }
	cancelReq struct {
		id    string
		reply chan bool
	}
	snapshotReq struct{ reply chan Snapshot }
	progressReq struct {
		id    string
		reply func(Progress, bool)
	}
	textReq struct {
		id    string
		reply func(string, int, bool)
	}
)
