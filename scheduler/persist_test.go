package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// fullStore is the real store with a switch that makes every job write fail
// as a full disk does; reads and Enqueue (done before the disk filled) pass.
type fullStore struct {
	*store.Store
	full       atomic.Bool
	claimsFull atomic.Bool // Claim fails too (no free page left for it)
	refused    atomic.Int64
}

func (f *fullStore) noSpace(op, id string) error {
	f.refused.Add(1)
	return fmt.Errorf("%s %s: commit: %w: write /data/vramcram.db: %w", op, id, store.ErrNoSpace, syscall.ENOSPC)
}

func (f *fullStore) Complete(id string, result []byte) error {
	if f.full.Load() {
		return f.noSpace("complete", id)
	}
	return f.Store.Complete(id, result)
}

func (f *fullStore) Fail(id, reason string) error {
	if f.full.Load() {
		return f.noSpace("fail", id)
	}
	return f.Store.Fail(id, reason)
}

func (f *fullStore) Requeue(id, reason string) (store.JobState, error) {
	if f.full.Load() {
		return "", f.noSpace("requeue", id)
	}
	return f.Store.Requeue(id, reason)
}

func (f *fullStore) Claim(model string) (store.Job, error) {
	if f.claimsFull.Load() {
		return store.Job{}, f.noSpace("claim", model)
	}
	return f.Store.Claim(model)
}

func setupFull(t *testing.T, slots int) (*bundle, *fullStore) {
	t.Helper()
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	fs := &fullStore{Store: st}
	cfg := Config{TotalMB: 10000, MaxAttempts: 3, Models: models(map[string]int{"a": 1000}, slots)}
	l := newFakeLauncher(cfg.TotalMB, map[string]int{"a": 1000})
	meter, _ := vram.NewStatic(cfg.TotalMB)
	s, err := New(cfg, fs, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() {
		fs.full.Store(false)
		fs.claimsFull.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		_ = st.Close()
	})
	return &bundle{t: t, st: st, l: l, sched: s}, fs
}

// TestPersist_FullDiskDuringCompletions: jobs finish while the disk is full.
// Their results are held, /health's source says degraded with the reason,
// the running count is 0 with the held outcomes counted apart; once the disk
// has room every job completes with its result stored.
func TestPersist_FullDiskDuringCompletions(t *testing.T) {
	b, fs := setupFull(t, 2)
	fs.full.Store(true)
	const n = 5
	ids := make([]string, n)
	for k := range ids {
		ids[k] = b.submit("a", fmt.Sprintf("p%d", k), 0)
	}
	snap := b.until("every outcome held", func(s Snapshot) bool { return s.HeldWrites == n })
	if !strings.Contains(snap.StoreDegraded, "store write failing") || !strings.Contains(snap.StoreDegraded, "no space left") {
		t.Errorf("store degraded %q, want the reason", snap.StoreDegraded)
	}
	if snap.Running != 0 {
		t.Errorf("running %d while every job has finished on its engine", snap.Running)
	}
	for _, id := range ids {
		if j, err := b.st.Get(id); err != nil || j.State != store.JobStateRunning {
			t.Fatalf("job %s while its write is held: %+v %v; want running in the store", id, j.State, err)
		}
	}
	// The persister keeps trying: wait for a retry to be refused too.
	refused := fs.refused.Load()
	deadline := time.Now().Add(10 * time.Second)
	for fs.refused.Load() <= refused+1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if fs.refused.Load() <= refused+1 {
		t.Fatal("held writes are not retried")
	}

	fs.full.Store(false)
	for k, id := range ids {
		b.wait(id, store.JobStateCompleted)
		res, err := b.st.Result(id)
		if want := fmt.Sprintf(`{"type":"llm","text":"a:p%d"}`, k); err != nil || string(res) != want {
			t.Errorf("result %s: %s %v; want %s", id, res, err, want)
		}
	}
	b.until("healthy again", func(s Snapshot) bool { return s.StoreDegraded == "" && s.HeldWrites == 0 })
}

// TestPersist_CapStopsClaims: past the cap of held bytes, no new job is
// claimed (they stay queued), nothing held is dropped, and once the store
// takes the held results the rest run.
func TestPersist_CapStopsClaims(t *testing.T) {
	old := maxHeldBytes
	maxHeldBytes = 1
	t.Cleanup(func() { maxHeldBytes = old })
	b, fs := setupFull(t, 1)
	fs.full.Store(true)
	ids := []string{b.submit("a", "x", 0), b.submit("a", "y", 0), b.submit("a", "z", 0)}
	b.until("one outcome held", func(s Snapshot) bool { return s.HeldWrites == 1 })
	// The slot comes back twice and claims nothing.
	paused := b.sched.persist.pauses.Load()
	b.until("two paused rounds of the slot", func(Snapshot) bool { return b.sched.persist.pauses.Load() >= paused+2 })
	queued := 0
	for _, id := range ids {
		if j, _ := b.st.Get(id); j.State == store.JobStateQueued {
			queued++
		}
	}
	if queued != 2 {
		t.Errorf("%d jobs queued past the cap, want 2 (no new claim)", queued)
	}
	fs.full.Store(false)
	for _, id := range ids {
		b.wait(id, store.JobStateCompleted)
	}
}

// TestPersist_ClaimFailureDegrades: a claim refused by a full store makes
// /health degraded and does not lose the job; with room it runs.
func TestPersist_ClaimFailureDegrades(t *testing.T) {
	b, fs := setupFull(t, 1)
	fs.claimsFull.Store(true)
	id := b.submit("a", "x", 0)
	b.until("degraded by the failed claim", func(s Snapshot) bool { return strings.Contains(s.StoreDegraded, "no space left") })
	fs.claimsFull.Store(false)
	b.wait(id, store.JobStateCompleted)
	b.until("healthy again", func(s Snapshot) bool { return s.StoreDegraded == "" })
}
