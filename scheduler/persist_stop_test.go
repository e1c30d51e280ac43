package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// gateStore: the first Requeue fails as a full disk does; later ones wait on gate.
type gateStore struct {
	*store.Store
	calls atomic.Int64
	gate  chan struct{}
}

func (g *gateStore) Requeue(id, reason string) (store.JobState, error) {
	if g.calls.Add(1) == 1 {
		return "", fmt.Errorf("requeue %s: %w: %w", id, store.ErrNoSpace, syscall.ENOSPC)
	}
	<-g.gate
	return g.Store.Requeue(id, reason)
}

// A held requeue that lands after the loop has stopped taking requests
// does not hang Stop: the persister's Notify gives up once the loop exits
// (it waited for the loop, which waited for the persister).
func TestPersist_HeldRequeueLandingAtStopDoesNotHang(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	gs := &gateStore{Store: st, gate: make(chan struct{})}
	cfg := Config{TotalMB: 10000, MaxAttempts: 3, Models: models(map[string]int{"a": 1000}, 1)}
	l := newFakeLauncher(cfg.TotalMB, map[string]int{"a": 1000})
	l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
		return nil, errors.New("engine hiccup") // not rejected: the job is requeued
	}
	meter, _ := vram.NewStatic(cfg.TotalMB)
	s, err := New(cfg, gs, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	b := &bundle{t: t, st: st, l: l, sched: s}
	b.submit("a", "x", 0)
	b.until("requeue held", func(s Snapshot) bool { return s.HeldWrites == 1 })
	// The persister's retry is now blocked in Requeue. Stop the scheduler;
	// once the loop has exited, let the store take the requeue.
	for gs.calls.Load() < 2 { // the persister's timed retry is in Requeue
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stopped <- s.Stop(ctx)
	}()
	t0 := time.Now()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-s.done:
		t.Logf("loop done before gate opened, after %v", time.Since(t0))
	default:
		t.Logf("loop NOT done before gate opened; requeue calls %d", gs.calls.Load())
	}
	close(gs.gate)
	select {
	case err := <-stopped:
		t.Logf("stop returned: %v after %v", err, time.Since(t0))
	case <-time.After(8 * time.Second):
		t.Fatal("Stop hangs: the persister blocks in Notify (loop gone, done not closed) and the loop's persist.stop waits for the persister")
	}
}

// releaseGateStore crashes the claiming slot's engine right after a claim
// (so the slot finds its engine gone and releases the job unrun), and
// refuses the first Release as a full disk does.
type releaseGateStore struct {
	*store.Store
	l        *fakeLauncher
	crashed  atomic.Bool
	releases atomic.Int64
}

func (g *releaseGateStore) Claim(model string) (store.Job, error) {
	j, err := g.Store.Claim(model)
	if err == nil && g.crashed.CompareAndSwap(false, true) {
		g.l.mu.Lock()
		for e := range g.l.alive {
			defer e.crash()
		}
		g.l.mu.Unlock()
	}
	return j, err
}

func (g *releaseGateStore) Release(id string) error {
	if g.releases.Add(1) == 1 {
		return fmt.Errorf("release %s: %w: %w", id, store.ErrNoSpace, syscall.ENOSPC)
	}
	return g.Store.Release(id)
}

// A job claimed by a slot whose engine died meanwhile goes back to its queue
// unrun; when the store refuses that release, the persister holds and
// retries it, and the job then runs on a new engine (it stayed running in
// the store until a restart).
func TestPersist_HeldReleaseOfAnUnrunJob(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cfg := Config{TotalMB: 10000, MaxAttempts: 3, Models: models(map[string]int{"a": 1000}, 1)}
	l := newFakeLauncher(cfg.TotalMB, map[string]int{"a": 1000})
	gs := &releaseGateStore{Store: st, l: l}
	meter, _ := vram.NewStatic(cfg.TotalMB)
	s, err := New(cfg, gs, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	b := &bundle{t: t, st: st, l: l, sched: s}
	j := b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	if gs.releases.Load() < 2 || j.Attempts != 1 {
		t.Fatalf("releases %d, attempts %d; want the refused release retried and one counted attempt", gs.releases.Load(), j.Attempts)
	}
}
