package store

import (
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
