package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/vram"
)

// fakeLauncher starts fakeEngines and records what the ledger would see on a
// real GPU: the VRAM of every engine whose process is alive.
type fakeLauncher struct {
	mu          sync.Mutex
	sizes       map[string]int // model → MiB its engine really holds
	budget      int
	loadDelay   time.Duration
	failLoad    map[string]error
	unavailable map[string]error
	runFunc     func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error)
	alive       map[*fakeEngine]bool
	peakMB      int
	overBudget  []string
	launches    []string
	stops       []string
	nextPID     int
	// releaseDelay keeps an exited engine's memory held (as a driver does)
	// for this long after its exit.
	releaseDelay time.Duration
	exitedAt     map[*fakeEngine]time.Time
	launchedAt   map[string][]time.Time
	// stopHold, when set, keeps each engine's Stop from returning (its
	// process has exited already) until it is closed; stopsReturned
	// counts the Stops that have returned.
	stopHold      chan struct{}
	stopsReturned int
}

// held returns MiB held by live engines and by exited ones whose memory has
// not come back yet, and the per-PID view. Caller holds l.mu.
func (l *fakeLauncher) held(now time.Time) (int, map[int]int) {
	byPID := map[int]int{}
	sum := 0
	for e := range l.alive {
		byPID[e.pid] = l.sizes[e.model]
		sum += l.sizes[e.model]
	}
	for e, at := range l.exitedAt {
		if now.Sub(at) < l.releaseDelay {
			byPID[e.pid] = l.sizes[e.model]
			sum += l.sizes[e.model]
		}
	}
	return sum, byPID
}

// fakeMeter reads the launcher's engines as NVML would.
type fakeMeter struct {
	l       *fakeLauncher
	totalMB int
}

func (m *fakeMeter) Read(ctx context.Context) (vram.Reading, error) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	used, byPID := m.l.held(time.Now())
	return vram.Reading{Source: vram.SourceNVML, TotalMB: m.totalMB, FreeMB: m.totalMB - used, ByPID: byPID}, nil
}

func newFakeLauncher(budget int, sizes map[string]int) *fakeLauncher {
	return &fakeLauncher{sizes: sizes, budget: budget, failLoad: map[string]error{}, unavailable: map[string]error{}, alive: map[*fakeEngine]bool{}}
}

func (l *fakeLauncher) Check(sp engine.Spec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unavailable[sp.Model]
}

func (l *fakeLauncher) Launch(ctx context.Context, sp engine.Spec) (Engine, error) {
	m := Model{Name: sp.Model}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextPID++
	e := &fakeEngine{l: l, model: m.Name, pid: 1000 + l.nextPID, done: make(chan struct{}), stopped: make(chan struct{}), loadErr: l.failLoad[m.Name]}
	l.alive[e] = true
	l.launches = append(l.launches, m.Name)
	if l.launchedAt == nil {
		l.launchedAt = map[string][]time.Time{}
	}
	l.launchedAt[m.Name] = append(l.launchedAt[m.Name], time.Now())
	used, _ := l.held(time.Now())
	l.peakMB = max(l.peakMB, used)
	if used > l.budget {
		l.overBudget = append(l.overBudget, fmt.Sprintf("launch %s: %d MiB alive > budget %d", m.Name, used, l.budget))
	}
	return e, nil
}

func (l *fakeLauncher) launched() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.launches...)
}

func (l *fakeLauncher) stopped() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.stops...)
}

// fakeEngine is an in-process engine. Its "process" ends on Stop or crash.
type fakeEngine struct {
	l       *fakeLauncher
	model   string
	pid     int
	loadErr error
	once    sync.Once
	done    chan struct{}
	stopped chan struct{}
	err     error
	running sync.WaitGroup
}

func (e *fakeEngine) exit(err error) {
	e.once.Do(func() {
		e.err = err
		e.l.mu.Lock()
		delete(e.l.alive, e)
		if e.l.exitedAt == nil {
			e.l.exitedAt = map[*fakeEngine]time.Time{}
		}
		e.l.exitedAt[e] = time.Now()
		e.l.mu.Unlock()
		close(e.done)
	})
}

func (e *fakeEngine) WaitReady(ctx context.Context) error {
	select {
	case <-time.After(e.l.loadDelay):
	case <-ctx.Done():
		e.exit(nil)
		return ctx.Err()
	case <-e.done:
		return e.err
	}
	if e.loadErr != nil {
		e.exit(e.loadErr)
		return e.loadErr
	}
	return nil
}

func (e *fakeEngine) Done() <-chan struct{} { return e.done }
func (e *fakeEngine) Err() error            { return e.err }
func (e *fakeEngine) PID() int              { return e.pid }

func (e *fakeEngine) Stop(ctx context.Context) error {
	e.l.mu.Lock()
	e.l.stops = append(e.l.stops, e.model)
	hold := e.l.stopHold
	e.l.mu.Unlock()
	e.exit(nil)
	if hold != nil {
		<-hold
	}
	e.l.mu.Lock()
	e.l.stopsReturned++
	e.l.mu.Unlock()
	return nil
}

// crash ends the engine as if the process died.
func (e *fakeEngine) crash() { e.exit(errors.New("engine crashed (exit status 2)")) }

func (e *fakeEngine) Run(ctx context.Context, job engine.Job, progress func(Progress)) ([]byte, error) {
	select {
	case <-e.done:
		return nil, errors.New("engine is gone")
	default:
	}
	if e.l.runFunc != nil {
		return e.l.runFunc(ctx, e, job)
	}
	progress(Progress{Tokens: 1, Chunk: "ok"})
	return []byte(`{"type":"llm","text":"` + job.Model + `:` + job.Prompt + `"}`), nil
}

// URL makes fake engines take direct (interactive) requests.
func (e *fakeEngine) URL() string { return "http://fake.invalid/" + e.model }

// checkWaitedForRelease fails t unless next was launched only once the
// evicted victim's memory had come back (releaseDelay after its exit), and
// nothing ever held more than the budget.
func (l *fakeLauncher) checkWaitedForRelease(t *testing.T, victim, next string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.overBudget) > 0 {
		t.Fatalf("a load raced an evicted engine's memory: %v", l.overBudget)
	}
	var exited time.Time
	for e, at := range l.exitedAt {
		if e.model == victim {
			exited = at
		}
	}
	if exited.IsZero() || len(l.launchedAt[next]) == 0 {
		t.Fatalf("%s was not evicted for %s", victim, next)
	}
	if gap := l.launchedAt[next][0].Sub(exited); gap < l.releaseDelay {
		t.Fatalf("%s started %v after %s exited, before its memory came back (%v)", next, gap, victim, l.releaseDelay)
	}
}
