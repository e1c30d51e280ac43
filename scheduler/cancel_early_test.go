package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// hookStore runs onClaim after a successful claim, before the slot sees the job.
type hookStore struct {
	*store.Store
	onClaim func(store.Job)
}

func (h *hookStore) Claim(model string) (store.Job, error) {
	j, err := h.Store.Claim(model)
	if err == nil && h.onClaim != nil {
		h.onClaim(j)
	}
	return j, err
}

func setupHook(t *testing.T, run func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error)) (*bundle, *hookStore) {
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := &hookStore{Store: st}
	cfg := Config{TotalMB: 10000, MaxAttempts: 3, Models: models(map[string]int{"a": 1000}, 1)}
	l := newFakeLauncher(cfg.TotalMB, map[string]int{"a": 1000})
	l.runFunc = run
	meter, _ := vram.NewStatic(cfg.TotalMB)
	s, err := New(cfg, hs, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		_ = st.Close()
	})
	return &bundle{t: t, st: st, l: l, sched: s}, hs
}

// The API cancels a job the moment after a slot claimed it (the store says
// running, so it calls sched.Cancel), before the loop saw jobStarted: the
// loop keeps the cancel and applies it when jobStarted comes, so the engine
// stops at once (it ran the job to its end before).
func TestScheduler_CancelBeforeJobStartedStopsIt(t *testing.T) {
	ranFor := make(chan time.Duration, 1)
	b, hs := setupHook(t, func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
		t0 := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		ranFor <- time.Since(t0)
		return []byte(`{"type":"llm","text":"done"}`), nil
	})
	var aborted bool
	hs.onClaim = func(j store.Job) {
		prev, err := hs.Store.Cancel(j.ID) // what api.cancel does
		if err != nil || prev != store.JobStateRunning {
			t.Errorf("cancel: %v %v", prev, err)
		}
		aborted, _ = b.sched.Cancel(context.Background(), j.ID)
	}
	b.submit("a", "x", 0)
	d := <-ranFor
	t.Logf("sched.Cancel reported aborted=%v; the engine ran the cancelled job for %v", aborted, d.Round(time.Millisecond))
	if d > time.Second {
		t.Fatalf("cancelled job was not stopped: ran %v on the engine", d.Round(time.Millisecond))
	}
}

// Stop's force (ctx expired, a second signal) also cancels a job whose
// jobStarted reaches the loop after forceStop ran (it ran to its end, and
// Stop waited for it).
func TestScheduler_ForceStopCancelsJobStartingLate(t *testing.T) {
	claimed := make(chan struct{})
	proceed := make(chan struct{})
	ranFor := make(chan time.Duration, 1)
	b, hs := setupHook(t, func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
		t0 := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		ranFor <- time.Since(t0)
		return []byte(`{"type":"llm","text":"done"}`), nil
	})
	hs.onClaim = func(j store.Job) { close(claimed); <-proceed }
	b.submit("a", "x", 0)
	<-claimed
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // force at once, as a second SIGTERM does
	stopDone := make(chan time.Duration, 1)
	go func() { t0 := time.Now(); _ = b.sched.Stop(ctx); stopDone <- time.Since(t0) }()
	time.Sleep(200 * time.Millisecond) // the loop has run forceStop
	close(proceed)
	d := <-stopDone
	r := <-ranFor
	t.Logf("forced Stop took %v; job ran %v", d.Round(time.Millisecond), r.Round(time.Millisecond))
	if d > 2*time.Second {
		t.Fatalf("forced Stop waited %v for a job that was never cancelled", d.Round(time.Millisecond))
	}
}
