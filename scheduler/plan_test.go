package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestChooseVictims(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name  string
		cands []victim
		need  int
		scope evictScope
		want  []int
		ok    bool
	}{
		{"nothing needed", nil, 0, scopeAny, nil, true},
		{"oldest idle first", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(30)},
			{ID: 2, ReservedMB: 4000, LastUsed: at(10)},
			{ID: 3, ReservedMB: 4000, LastUsed: at(20)},
		}, 3000, scopeAny, []int{2}, true},
		{"idle without work before idle with work", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Queued: 3},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20)},
		}, 4000, scopeAny, []int{2}, true},
		{"busy only when idle is not enough", []victim{
			{ID: 1, ReservedMB: 2000, LastUsed: at(10), Busy: true},
			{ID: 2, ReservedMB: 2000, LastUsed: at(20)},
		}, 3000, scopeAny, []int{2, 1}, true},
		{"pinned never chosen", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10), Pinned: true},
			{ID: 2, ReservedMB: 1000, LastUsed: at(20)},
		}, 4000, scopeAny, nil, false},
		{"narrow scope skips busy and queued", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10), Busy: true},
			{ID: 2, ReservedMB: 8000, LastUsed: at(10), Queued: 1},
			{ID: 3, ReservedMB: 1000, LastUsed: at(20)},
		}, 4000, scopeIdleNoWork, nil, false},
		{"unneeded early victim dropped", []victim{
			{ID: 1, ReservedMB: 500, LastUsed: at(10)},
			{ID: 2, ReservedMB: 6000, LastUsed: at(20)},
		}, 5000, scopeAny, []int{2}, true},
		{"several when one is not enough", []victim{
			{ID: 1, ReservedMB: 3000, LastUsed: at(10)},
			{ID: 2, ReservedMB: 3000, LastUsed: at(20)},
			{ID: 3, ReservedMB: 3000, LastUsed: at(30)},
		}, 5000, scopeAny, []int{1, 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseVictims(tt.cands, tt.need, tt.scope)
			var ids []int
			for _, v := range got {
				ids = append(ids, v.ID)
			}
			if ok != tt.ok || !slices.Equal(ids, tt.want) {
				t.Fatalf("chooseVictims = %v, %v; want %v, %v", ids, ok, tt.want, tt.ok)
			}
			freed := 0
			for _, v := range got {
				freed += v.ReservedMB
			}
			if ok && freed < tt.need {
				t.Fatalf("freed %d < need %d", freed, tt.need)
			}
		})
	}
}

func TestOrderCandidates(t *testing.T) {
	cs := []candidate{
		{Model: "preload"},
		{Model: "old-low", HasHead: true, Priority: 0, Seq: 1},
		{Model: "new-high", HasHead: true, Priority: 5, Seq: 9},
		{Model: "new-low", HasHead: true, Priority: 0, Seq: 4},
	}
	orderCandidates(cs)
	var got []string
	for _, c := range cs {
		got = append(got, c.Model)
	}
	if want := []string{"new-high", "old-low", "new-low", "preload"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func TestScopeFor(t *testing.T) {
	now := time.Unix(100, 0)
	fresh := candidate{HasHead: true, Since: now.Add(-time.Second)}
	stale := candidate{HasHead: true, Since: now.Add(-time.Minute)}
	tests := []struct {
		p    Policy
		c    candidate
		want evictScope
	}{
		{PolicyFIFO, fresh, scopeAny},
		{PolicyBatch, fresh, scopeIdleNoWork},
		{PolicyBatch, stale, scopeAny},
		{PolicyFIFO, candidate{}, scopeIdleNoWork},
	}
	for _, tt := range tests {
		if got := scopeFor(tt.p, tt.c, now, 30*time.Second); got != tt.want {
			t.Errorf("scopeFor(%s, %+v) = %v, want %v", tt.p, tt.c, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 20: time.Minute} {
		if got := backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

func BenchmarkChooseVictims(b *testing.B) {
	for _, n := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			cands := make([]victim, n)
			for i := range cands {
				cands[i] = victim{ID: i, ReservedMB: 1000 + i*37%500, LastUsed: time.Unix(int64(i*7919%n), 0), Busy: i%5 == 0, Queued: i % 3}
			}
			b.ReportAllocs()
			for b.Loop() {
				chooseVictims(cands, n*300, scopeAny)
			}
		})
	}
}
