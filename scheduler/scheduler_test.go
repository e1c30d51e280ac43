package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	t     *testing.T
	st    *store.Store
	l     *fakeLauncher
	sched *Scheduler
}

func setup(t *testing.T, cfg Config, sizes map[string]int, tweak func(*fakeLauncher)) *bundle {
	t.Helper()
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TotalMB == 0 {
		cfg.TotalMB = 10000
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	l := newFakeLauncher(cfg.TotalMB-cfg.SafetyMarginMB, sizes)
	if tweak != nil {
		tweak(l)
	}
	meter, _ := vram.NewStatic(cfg.TotalMB)
	s, err := New(cfg, st, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	b := &bundle{t: t, st: st, l: l, sched: s}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		if over := l.overBudget; len(over) > 0 {
			t.Errorf("ledger exceeded: %v", over)
		}
		if err := st.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		_ = st.Close()
	})
	return b
}

func models(sizes map[string]int, slots int) []Model {
	var out []Model
	for _, n := range slices.Sorted(mapKeys(sizes)) {
		out = append(out, Model{Name: n, Kind: engine.KindLLM, VRAMMB: sizes[n], Slots: slots})
	}
	return out
}

func mapKeys(m map[string]int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (b *bundle) submit(model, prompt string, prio int) string {
	b.t.Helper()
	if err := b.sched.Admit(context.Background(), model); err != nil {
		b.t.Fatalf("admit %s: %v", model, err)
	}
	j := &store.Job{ID: store.NewID(), Model: model, Type: "llm", Prompt: prompt, Priority: prio}
	if err := b.st.Enqueue(context.Background(), j); err != nil {
		b.t.Fatal(err)
	}
	b.sched.Notify(model)
	return j.ID
}

func (b *bundle) wait(id string, want store.JobState) store.Job {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := b.st.Get(id)
		if err != nil {
			b.t.Fatal(err)
		}
		if j.State.Final() {
			if j.State != want {
				b.t.Fatalf("job %s (%s) ended %s (%s), want %s", id, j.Model, j.State, j.Error, want)
			}
			return j
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("job %s (%s) still %s", id, j.Model, j.State)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (b *bundle) until(what string, cond func(Snapshot) bool) Snapshot {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, err := b.sched.Snapshot(context.Background())
		if err != nil {
			b.t.Fatal(err)
		}
		if cond(snap) {
			return snap
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s; snapshot %+v", what, snap)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func stateOf(s Snapshot, name string) string {
	for _, m := range s.Models {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

func TestScheduler_RunsJobs(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 2)}, sizes, nil)
	var ids []string
	for i := range 10 {
		ids = append(ids, b.submit("a", fmt.Sprint("p", i), 0))
	}
	for _, id := range ids {
		b.wait(id, store.JobStateCompleted)
	}
	res, err := b.st.Result(ids[3])
	if err != nil || string(res) != `{"type":"llm","text":"a:p3"}` {
		t.Fatalf("result = %s, %v", res, err)
	}
	if got := b.l.launched(); len(got) != 1 {
		t.Fatalf("launches = %v, want one", got)
	}
}

func TestScheduler_EvictsLRUIdle(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 4000, "b": 4000, "c": 4000}
	b := setup(t, Config{Models: models(sizes, 1), TotalMB: 9000, SafetyMarginMB: 500, Policy: PolicyFIFO}, sizes, nil)
	b.wait(b.submit("a", "1", 0), store.JobStateCompleted)
	b.wait(b.submit("b", "1", 0), store.JobStateCompleted)
	b.wait(b.submit("a", "2", 0), store.JobStateCompleted) // a is now more recent than b
	b.wait(b.submit("c", "1", 0), store.JobStateCompleted)
	if got, want := b.l.stopped(), []string{"b"}; !slices.Equal(got, want) {
		t.Fatalf("stopped = %v, want %v (the least recently used)", got, want)
	}
	snap := b.until("c ready", func(s Snapshot) bool { return stateOf(s, "c") == ModelReady })
	if snap.ReservedMB > snap.BudgetMB {
		t.Fatalf("reserved %d > budget %d", snap.ReservedMB, snap.BudgetMB)
	}
	if stateOf(snap, "a") != ModelReady || stateOf(snap, "b") != ModelUnloaded {
		t.Fatalf("models = %+v", snap.Models)
	}
}

func TestScheduler_BusyVictimIsDrainedNotKilled(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 6000, "b": 6000}
	release := make(chan struct{})
	b := setup(t, Config{Models: models(sizes, 1), TotalMB: 10000, Policy: PolicyFIFO}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Prompt == "long" {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-e.done:
					return nil, errors.New("killed mid-job")
				}
			}
			return []byte(`{"type":"llm","text":"x"}`), nil
		}
	})
	long := b.submit("a", "long", 0)
	b.until("a busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	short := b.submit("b", "short", 0)
	b.until("a draining", func(s Snapshot) bool { return stateOf(s, "a") == ModelDraining })
	if got := b.l.stopped(); len(got) != 0 {
		t.Fatalf("a busy instance was stopped: %v", got)
	}
	close(release)
	j := b.wait(long, store.JobStateCompleted)
	if j.Attempts != 1 {
		t.Fatalf("long job attempts = %d, want 1 (never interrupted)", j.Attempts)
	}
	b.wait(short, store.JobStateCompleted)
}

func TestScheduler_CrashRequeuesJob(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	crashed := make(chan struct{}, 1)
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			select {
			case crashed <- struct{}{}: // the first run crashes its engine
				e.crash()
				return nil, errors.New("connection reset")
			default:
			}
			return []byte(`{"type":"llm","text":"ok"}`), nil
		}
	})
	id := b.submit("a", "x", 0)
	j := b.wait(id, store.JobStateCompleted)
	if j.Attempts != 2 {
		t.Fatalf("attempts = %d, want 2", j.Attempts)
	}
	if got := b.l.launched(); len(got) != 2 {
		t.Fatalf("launches = %v, want a reload after the crash", got)
	}
}

func TestScheduler_LoadFailureFailsJobsAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"bad": 1000, "good": 1000}
	b := setup(t, Config{Models: models(sizes, 1), MaxAttempts: 2}, sizes, func(l *fakeLauncher) {
		l.failLoad["bad"] = errors.New("exiting due to model loading error")
	})
	bad := b.submit("bad", "x", 0)
	good := b.submit("good", "y", 0)
	b.wait(good, store.JobStateCompleted)
	j := b.wait(bad, store.JobStateFailed)
	if !strings.Contains(j.Error, "exiting due to model loading error") {
		t.Fatalf("error = %q, want the engine's message", j.Error)
	}
	if n := slices.Index(b.l.launched(), "bad"); n < 0 {
		t.Fatal("bad was never launched")
	}
}

func TestScheduler_UnavailableModel(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.unavailable["a"] = errors.New(`model file "x.gguf" not found`)
	})
	err := b.sched.Admit(context.Background(), "a")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "x.gguf") {
		t.Fatalf("admit = %v", err)
	}
	snap := b.until("unavailable", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnavailable })
	if snap.Models[0].Reason == "" {
		t.Fatal("no reason shown")
	}
	if err := b.sched.Admit(context.Background(), "nope"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("admit unknown = %v", err)
	}
}

func TestScheduler_TooLarge(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"huge": 50000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, nil)
	if err := b.sched.Admit(context.Background(), "huge"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("admit = %v, want ErrTooLarge", err)
	}
}

func TestScheduler_ShutdownReleasesRunningJobs(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := newFakeLauncher(10000, sizes)
	l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s, _ := New(Config{Models: models(sizes, 1), TotalMB: 10000, ShutdownGrace: 50 * time.Millisecond}, st, l, nil, nil)
	s.Start(context.Background())
	j := &store.Job{ID: store.NewID(), Model: "a", Prompt: "x"}
	if err := st.Enqueue(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	s.Notify("a")
	for deadline := time.Now().Add(5 * time.Second); ; {
		got, _ := st.Get(j.ID)
		if got.State == store.JobStateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("job never started")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Get(j.ID)
	if got.State != store.JobStateQueued || got.Attempts != 0 {
		t.Fatalf("after shutdown: state %s attempts %d, want queued with the attempt not counted", got.State, got.Attempts)
	}
	if len(l.alive) != 0 {
		t.Fatalf("engines alive after Stop: %d", len(l.alive))
	}
}

// Stop returns only once the effect goroutines have ended: here an
// engine's Stop, whose process exited at once (so the loop is done) but
// which returns later. Before, Stop returned while such work could still
// touch the engine or the store.
func TestScheduler_StopJoinsEffects(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	hold := make(chan struct{})
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) { l.stopHold = hold })
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	time.AfterFunc(300*time.Millisecond, func() { close(hold) })
	if err := b.sched.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.l.mu.Lock()
	defer b.l.mu.Unlock()
	if len(b.l.stops) != 1 || b.l.stopsReturned != 1 {
		t.Fatalf("Stop returned with %d engine stops begun and %d returned, want 1 and 1", len(b.l.stops), b.l.stopsReturned)
	}
}

func TestScheduler_PriorityFirst(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	gate := make(chan struct{})
	var order []string
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Prompt == "first" {
				<-gate
			}
			order = append(order, job.Prompt) // one slot: runs are sequential
			return []byte(`{}`), nil
		}
	})
	first := b.submit("a", "first", 0)
	b.until("busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	low := b.submit("a", "low", -5)
	high := b.submit("a", "high", 10)
	close(gate)
	b.wait(first, store.JobStateCompleted)
	b.wait(low, store.JobStateCompleted)
	b.wait(high, store.JobStateCompleted)
	if want := []string{"first", "high", "low"}; !slices.Equal(order, want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
}

func TestScheduler_CancelRunning(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Prompt == "forever" {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return []byte(`{}`), nil
		}
	})
	id := b.submit("a", "forever", 0)
	b.until("busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	if _, err := b.st.Cancel(id); err != nil {
		t.Fatal(err)
	}
	ok, err := b.sched.Cancel(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("cancel = %v, %v", ok, err)
	}
	b.wait(id, store.JobStateCancelled)
	// The slot is free again: the next job runs.
	b.wait(b.submit("a", "next", 0), store.JobStateCompleted)
}

func TestScheduler_PreloadLoadUnload(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 4000, "b": 4000}
	ms := models(sizes, 1)
	ms[0].Preload = true
	b := setup(t, Config{Models: ms}, sizes, nil)
	b.until("a preloaded", func(s Snapshot) bool { return stateOf(s, "a") == ModelReady })
	if err := b.sched.Load(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	b.until("b loaded", func(s Snapshot) bool { return stateOf(s, "b") == ModelReady })
	if err := b.sched.Unload(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	b.until("a unloaded", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnloaded })
	if err := b.sched.Load(context.Background(), "zzz"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("load unknown = %v", err)
	}
}

func TestScheduler_PinnedIsNeverEvicted(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"pin": 5000, "b": 4000, "c": 4000}
	ms := models(sizes, 1)
	for k := range ms {
		ms[k].Pinned = ms[k].Name == "pin"
	}
	b := setup(t, Config{Models: ms, TotalMB: 9000, Policy: PolicyFIFO}, sizes, nil)
	b.wait(b.submit("pin", "x", 0), store.JobStateCompleted)
	b.wait(b.submit("b", "x", 0), store.JobStateCompleted)
	b.wait(b.submit("c", "x", 0), store.JobStateCompleted)
	if got := b.l.stopped(); slices.Contains(got, "pin") {
		t.Fatalf("pinned model stopped: %v", got)
	}
}

func TestScheduler_TTLUnloadsIdleModel(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	ms := models(sizes, 1)
	ms[0].TTL = 100 * time.Millisecond
	b := setup(t, Config{Models: ms}, sizes, nil)
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	b.until("a unloaded after ttl", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnloaded })
	if got := b.l.stopped(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("stopped = %v", got)
	}
}

func TestScheduler_BatchKeepsServingLoadedModel(t *testing.T) {
	t.Parallel()
	// a and b do not fit together. Under batch, b's job waits while a has
	// queued work, until b's oldest job has waited MaxWait.
	sizes := map[string]int{"a": 6000, "b": 6000}
	gate := make(chan struct{})
	b := setup(t, Config{Models: models(sizes, 1), TotalMB: 10000, Policy: PolicyBatch, MaxWait: 2 * time.Second}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Prompt == "gate" {
				<-gate
			}
			return []byte(`{}`), nil
		}
	})
	first := b.submit("a", "gate", 0)
	b.until("a busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	more := []string{b.submit("a", "1", 0), b.submit("a", "2", 0)}
	other := b.submit("b", "x", 0)
	time.Sleep(50 * time.Millisecond)
	if got := b.l.stopped(); len(got) != 0 {
		t.Fatalf("batch swapped before max_wait: %v", got)
	}
	close(gate)
	b.wait(first, store.JobStateCompleted)
	for _, id := range more {
		b.wait(id, store.JobStateCompleted)
	}
	j := b.wait(other, store.JobStateCompleted)
	if wait := j.StartedAt.Sub(j.CreatedAt); wait > 5*time.Second {
		t.Fatalf("b waited %v", wait)
	}
	if got := b.l.launched(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("launches = %v, want a then b (one swap)", got)
	}
}

func TestScheduler_RejectedJobFailsWithoutRetry(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			return nil, fmt.Errorf("%w: request exceeds the available context size", ErrRejected)
		}
	})
	j := b.wait(b.submit("a", "x", 0), store.JobStateFailed)
	if j.Attempts != 1 || !strings.Contains(j.Error, "context size") {
		t.Fatalf("job = attempts %d error %q; want one attempt and the engine's reason", j.Attempts, j.Error)
	}
}

func TestScheduler_LoadFailureBacksOff(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"bad": 1000}
	b := setup(t, Config{Models: models(sizes, 1), MaxAttempts: 2}, sizes, func(l *fakeLauncher) {
		l.failLoad["bad"] = errors.New("exiting due to model loading error")
	})
	start := time.Now()
	b.wait(b.submit("bad", "x", 0), store.JobStateFailed)
	if got := len(b.l.launched()); got != 2 {
		t.Fatalf("launches = %d, want max_attempts (2)", got)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("second load after %v: the 1s backoff was skipped", d)
	}
}

func TestScheduler_LoadWaitsForEvictedMemory(t *testing.T) {
	t.Parallel()
	b := releaseRig(t, 300*time.Millisecond)
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	b.wait(b.submit("b", "y", 0), store.JobStateCompleted)
	b.l.checkWaitedForRelease(t, "a", "b")
}

// releaseRig runs two models of 6000 MiB on 10000 (so each evicts the
// other) under the FIFO policy, with engines whose memory comes back
// releaseDelay after they exit, read by a meter that sees it.
func releaseRig(t *testing.T, releaseDelay time.Duration) *bundle {
	t.Helper()
	sizes := map[string]int{"a": 6000, "b": 6000}
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l := newFakeLauncher(10000, sizes)
	l.releaseDelay = releaseDelay
	meter := &fakeMeter{l: l, totalMB: 10000}
	s, err := New(Config{Models: models(sizes, 1), TotalMB: 10000, Policy: PolicyFIFO, ReleasePoll: 10 * time.Millisecond}, st, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return &bundle{t: t, st: st, l: l, sched: s}
}
