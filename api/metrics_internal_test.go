package api

import (
	"fmt"
	"testing"
	"time"
)

func TestTimeMap_Bounded(t *testing.T) {
	tm := newTimeMap(100)
	t0 := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		tm.set(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second))
		if len(tm.m) > 100 {
			t.Fatalf("after %d sets: %d entries, max 100", i+1, len(tm.m))
		}
	}
	// The newest entry always stays; pruning drops the oldest.
	if _, ok := tm.get("999"); !ok {
		t.Error("newest entry pruned")
	}
	if _, ok := tm.get("0"); ok {
		t.Error("oldest entry kept")
	}
	// Updating a known ID at the limit does not prune.
	n := len(tm.m)
	tm.set("999", t0)
	if len(tm.m) != n {
		t.Errorf("update changed the size from %d to %d", n, len(tm.m))
	}
	tm.delete("999")
	if _, ok := tm.get("999"); ok {
		t.Error("deleted entry still there")
	}
}
