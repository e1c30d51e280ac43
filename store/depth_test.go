package store

import (
	"context"
	"fmt"
	"maps"
	"testing"
)

func TestStore_QueueDepths(t *testing.T) {
	tb := setup(t)
	got, err := tb.s.QueueDepths()
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	for _, p := range []int{0, 0, 5, MinPriority, MaxPriority} {
		tb.enqueue(t, "a", p)
	}
	tb.enqueue(t, "b", -3)
	tb.enqueue(t, "c", 1)
	tb.claim(t, "a") // takes the MaxPriority job
	tb.claim(t, "c") // c's queue is now empty

	got, err = tb.s.QueueDepths()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int]int{"a": {0: 2, 5: 1, MinPriority: 1}, "b": {-3: 1}}
	if len(got) != len(want) {
		t.Fatalf("depths = %v, want %v", got, want)
	}
	for m, w := range want {
		if !maps.Equal(got[m], w) {
			t.Errorf("depths[%s] = %v, want %v", m, got[m], w)
		}
	}
	// The totals agree with Depths.
	depths, err := tb.s.Depths()
	if err != nil {
		t.Fatal(err)
	}
	for m, byPrio := range got {
		n := 0
		for _, c := range byPrio {
			n += c
		}
		if depths[m] != n {
			t.Errorf("model %s: QueueDepths sums to %d, Depths says %d", m, n, depths[m])
		}
	}
}

// BenchmarkStore_QueueDepths measures a metrics scrape's read of 10000 queued
// jobs (the default scheduling.max_queue) over 4 models and 3 priorities.
func BenchmarkStore_QueueDepths(b *testing.B) {
	s, err := Open(b.TempDir()+"/bench.db", Options{NoSync: true, MaxQueued: 20000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	for i := range 10000 {
		j := &Job{ID: NewID(), Model: fmt.Sprintf("m%d", i%4), Type: "llm", Prompt: "p", Priority: i % 3}
		if err := s.Enqueue(context.Background(), j); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.QueueDepths(); err != nil {
			b.Fatal(err)
		}
	}
}
