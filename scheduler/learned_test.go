package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// setupMetered is setup with a meter that sees the fake engines' real
// memory, as NVML would.
func setupMetered(t *testing.T, cfg Config, real map[string]int) *bundle {
	t.Helper()
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	l := newFakeLauncher(cfg.TotalMB-cfg.SafetyMarginMB, real)
	cfg.MeterInterval = 10 * time.Millisecond
	s, err := New(cfg, st, l, &fakeMeter{l: l, totalMB: cfg.TotalMB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		_ = st.Close()
	})
	return &bundle{t: t, st: st, l: l, sched: s}
}

func TestLearned_MeasuredReplacesConfiguredAndIsPersisted(t *testing.T) {
	real := map[string]int{"a": 5000}
	cfg := Config{TotalMB: 20000, Models: []Model{{Name: "a", Kind: engine.KindLLM, VRAMMB: 3000, Slots: 1, LearnKey: "a|cfg1"}}}
	b := setupMetered(t, cfg, real)
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	snap := b.until("measured figure in the ledger", func(s Snapshot) bool { return s.Models[0].ReservedMB == 5000 })
	m := snap.Models[0]
	if m.MeasuredMB != 5000 || m.LearnedMB != 5000 || m.VRAMMB != 3000 {
		t.Fatalf("model status %+v, want measured=learned=5000, configured 3000", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		learned, err := b.st.LearnedVRAM()
		if err != nil {
			t.Fatal(err)
		}
		if learned["a|cfg1"] == 5000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("learned figures in the store: %v", learned)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLearned_UsedForTheNextLoad(t *testing.T) {
	real := map[string]int{"a": 5000, "b": 4000}
	cfg := Config{TotalMB: 10000, Models: []Model{
		{Name: "a", Kind: engine.KindLLM, VRAMMB: 3000, LearnedMB: 7000, Slots: 1},
		{Name: "b", Kind: engine.KindLLM, VRAMMB: 4000, Slots: 1},
	}}
	b := setupMetered(t, cfg, real)
	b.wait(b.submit("b", "x", 0), store.JobStateCompleted)
	// a reserves its learned 7000 at the start: with b's 4000 that is over
	// the budget, so b is evicted even though a's configured 3000 would fit.
	b.wait(b.submit("a", "y", 0), store.JobStateCompleted)
	snap := b.until("b evicted for a", func(s Snapshot) bool { return stateOf(s, "b") == ModelUnloaded })
	if snap.ReservedMB > snap.BudgetMB {
		t.Fatalf("reserved %d > budget %d", snap.ReservedMB, snap.BudgetMB)
	}
}

func TestLearned_ExternalUsageReducesAdmission(t *testing.T) {
	real := map[string]int{"a": 4000, "b": 4000}
	cfg := Config{TotalMB: 10000, Models: models(real, 1)}
	b := setupMetered(t, cfg, real)
	b.l.mu.Lock()
	b.l.alive[&fakeEngine{l: b.l, model: "a", pid: 99}] = true // someone else's 4000 MiB
	b.l.mu.Unlock()
	b.until("memory not ours seen", func(s Snapshot) bool { return s.NotOursMB == 4000 })
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	b.wait(b.submit("b", "y", 0), store.JobStateCompleted)
	// 4000 not ours + a 4000 + b 4000 > 10000: a had to go for b.
	snap := b.until("a evicted", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnloaded })
	if snap.ReservedMB+snap.NotOursMB > snap.BudgetMB {
		t.Fatalf("ledger %d + not ours %d > budget %d", snap.ReservedMB, snap.NotOursMB, snap.BudgetMB)
	}
}
