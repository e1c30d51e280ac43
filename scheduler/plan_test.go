package scheduler

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

func TestChooseVictims(t *testing.T) {
	t0 := time.Unix(1000, 0)
	batchAny := evictRule{scope: scopeAny, byDemand: true}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name  string
		cands []victim
		need  int
		rule  evictRule
		want  []int
		ok    bool
	}{
		{"nothing needed", nil, 0, evictRule{scope: scopeAny}, nil, true},
		{"oldest idle first", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(30)},
			{ID: 2, ReservedMB: 4000, LastUsed: at(10)},
			{ID: 3, ReservedMB: 4000, LastUsed: at(20)},
		}, 3000, evictRule{scope: scopeAny}, []int{2}, true},
		{"idle without work before idle with work", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Queued: 3},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20)},
		}, 4000, evictRule{scope: scopeAny}, []int{2}, true},
		{"busy only when idle is not enough", []victim{
			{ID: 1, ReservedMB: 2000, LastUsed: at(10), Busy: true},
			{ID: 2, ReservedMB: 2000, LastUsed: at(20)},
		}, 3000, evictRule{scope: scopeAny}, []int{2, 1}, true},
		{"pinned never chosen", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10), Pinned: true},
			{ID: 2, ReservedMB: 1000, LastUsed: at(20)},
		}, 4000, evictRule{scope: scopeAny}, nil, false},
		{"scope none takes nothing", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10)},
		}, 4000, evictRule{scope: scopeNone}, nil, false},
		{"narrow scope skips busy and queued", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10), Busy: true},
			{ID: 2, ReservedMB: 8000, LastUsed: at(10), Queued: 1},
			{ID: 3, ReservedMB: 1000, LastUsed: at(20)},
		}, 4000, evictRule{scope: scopeIdleNoWork}, nil, false},
		{"unneeded early victim dropped", []victim{
			{ID: 1, ReservedMB: 500, LastUsed: at(10)},
			{ID: 2, ReservedMB: 6000, LastUsed: at(20)},
		}, 5000, evictRule{scope: scopeAny}, []int{2}, true},
		{"several when one is not enough", []victim{
			{ID: 1, ReservedMB: 3000, LastUsed: at(10)},
			{ID: 2, ReservedMB: 3000, LastUsed: at(20)},
			{ID: 3, ReservedMB: 3000, LastUsed: at(30)},
		}, 5000, evictRule{scope: scopeAny}, []int{1, 2}, true},
		{"batch: least demand first, before least recently used", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Demand: 9},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20), Demand: 1},
		}, 4000, batchAny, []int{2}, true},
		{"batch: equal demand goes by least recently used", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(20), Demand: 2},
			{ID: 2, ReservedMB: 4000, LastUsed: at(10), Demand: 2},
		}, 4000, batchAny, []int{2}, true},
		{"batch: least demand first, queued work or not", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Queued: 2, Demand: 1},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20), Busy: true, Demand: 3},
			{ID: 3, ReservedMB: 4000, LastUsed: at(30), Demand: 4},
		}, 4000, batchAny, []int{1}, true},
		{"batch: a model in steady use stays though idle, a busy one in less demand is drained", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Demand: 9},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20), Busy: true, Queued: 3, Demand: 2},
		}, 4000, batchAny, []int{2}, true},
		{"batch before max_wait: only models in no more demand", []victim{
			{ID: 1, ReservedMB: 4000, LastUsed: at(10), Demand: 3},
			{ID: 2, ReservedMB: 4000, LastUsed: at(20), Demand: 2},
		}, 4000, evictRule{scope: scopeIdleNoWork, byDemand: true, capped: true, maxDemand: 2}, []int{2}, true},
		{"batch before max_wait: a model in more demand stays", []victim{
			{ID: 1, ReservedMB: 8000, LastUsed: at(10), Demand: 3},
		}, 4000, evictRule{scope: scopeIdleNoWork, byDemand: true, capped: true, maxDemand: 2}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chooseVictims(tt.cands, tt.need, tt.rule)
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

func TestRuleFor(t *testing.T) {
	now := time.Unix(100, 0)
	later, past := now.Add(time.Second), now.Add(-time.Second)
	fresh := candidate{HasHead: true, Since: now.Add(-time.Second), Due: later, Demand: 2}
	full := candidate{HasHead: true, Since: now.Add(-time.Second), Due: later, Full: true, Demand: 2}
	due := candidate{HasHead: true, Since: now.Add(-30*time.Second + dueLead), Due: now}
	early := candidate{HasHead: true, Since: now.Add(-time.Second), Due: past, Demand: 2} // due ahead of max_wait (setDue)
	rivalled := candidate{HasHead: true, Since: now.Add(-time.Second), Due: later, Demand: 2, Rivals: 1}
	fullRivalled := candidate{HasHead: true, Since: now.Add(-time.Second), Due: later, Demand: 2, Rivals: 1, Full: true}
	tests := []struct {
		p    Policy
		c    candidate
		want evictRule
	}{
		{PolicyFIFO, fresh, evictRule{scope: scopeAny}},
		{PolicyBatch, fresh, evictRule{scope: scopeIdleNoWork, byDemand: true, capped: true, maxDemand: 2}},
		{PolicyBatch, full, evictRule{scope: scopeIdleNoWork, byDemand: true}},
		{PolicyBatch, due, evictRule{scope: scopeAny, byDemand: true}},
		{PolicyBatch, early, evictRule{scope: scopeAny, byDemand: true}},
		{PolicyBatch, rivalled, evictRule{scope: scopeNone}},
		{PolicyBatch, fullRivalled, evictRule{scope: scopeIdleNoWork, byDemand: true}},
		{PolicyFIFO, rivalled, evictRule{scope: scopeAny}},
		{PolicyFIFO, candidate{}, evictRule{scope: scopeIdleNoWork}},
		{PolicyBatch, candidate{}, evictRule{scope: scopeIdleNoWork}},
	}
	for _, tt := range tests {
		if got := ruleFor(tt.p, tt.c, now); got != tt.want {
			t.Errorf("ruleFor(%s, %+v) = %+v, want %+v", tt.p, tt.c, got, tt.want)
		}
	}
}

// setDue: a head is due at max_wait less dueLead, and earlier when the
// heads due after it would find every lane busy with earlier swaps.
func TestSetDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const maxWait = 10 * time.Second
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	head := func(model string, since int) candidate {
		return candidate{Model: model, HasHead: true, Since: at(since), Swap: 2 * time.Second}
	}
	due := func(since int) time.Time { return at(since).Add(maxWait - dueLead) }
	tests := []struct {
		name  string
		cands []candidate
		lanes int
		want  []time.Time // per candidate; zero for one without a head
	}{
		{"apart: each at max_wait", []candidate{head("a", 0), head("b", 5000)}, 1, []time.Time{due(0), due(5000)}},
		{"two close, one lane: the first a swap ahead of the second",
			[]candidate{head("a", 0), head("b", 500)}, 1, []time.Time{due(500).Add(-2 * time.Second), due(500)}},
		{"two close, two lanes: side by side", []candidate{head("a", 0), head("b", 500)}, 2, []time.Time{due(0), due(500)}},
		{"three close, two lanes: the first a swap ahead of the third",
			[]candidate{head("a", 0), head("b", 400), head("c", 800)}, 2,
			[]time.Time{due(800).Add(-2 * time.Second), due(400), due(800)}},
		{"a chain: each a swap ahead of the next", []candidate{head("a", 0), head("b", 100), head("c", 200)}, 1,
			[]time.Time{due(200).Add(-4 * time.Second), due(200).Add(-2 * time.Second), due(200)}},
		{"a load wish has no due time", []candidate{{Model: "w"}, head("a", 0)}, 1, []time.Time{{}, due(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := slices.Clone(tt.cands)
			setDue(cs, maxWait, tt.lanes)
			heads := 0
			for _, c := range cs {
				if c.HasHead {
					heads++
				}
			}
			for k, c := range cs {
				if !c.Due.Equal(tt.want[k]) {
					t.Errorf("%s: due %v, want %v", c.Model, c.Due.Sub(t0), tt.want[k].Sub(t0))
				}
				if c.HasHead && c.Rivals != heads-1 {
					t.Errorf("%s: %d rivals, want %d", c.Model, c.Rivals, heads-1)
				}
			}
		})
	}
}

func TestDemand(t *testing.T) {
	t0 := time.Unix(100, 0)
	var d demand
	if got := d.now(t0); got != 0 {
		t.Fatalf("empty demand = %v", got)
	}
	d.add(t0)
	d.add(t0)
	if got := d.now(t0); got != 2 {
		t.Fatalf("two arrivals now = %v, want 2", got)
	}
	if got, want := d.now(t0.Add(demandTau)), 2/math.E; math.Abs(got-want) > 1e-9 {
		t.Fatalf("after one time constant = %v, want %v", got, want)
	}
	d.add(t0.Add(demandTau))
	if got, want := d.now(t0.Add(demandTau)), 1+2/math.E; math.Abs(got-want) > 1e-9 {
		t.Fatalf("after a third arrival = %v, want %v", got, want)
	}
}

func TestBacklogFull(t *testing.T) {
	m := func(queued, slots int, run, load float64) *modelState {
		return &modelState{Model: Model{Slots: slots}, queued: queued, avgRun: run, avgLoad: load}
	}
	tests := []struct {
		name  string
		m     *modelState
		prior figures
		want  bool
	}{
		{"one short job is not worth a load", m(1, 2, 0.3, 2), figures{}, false},
		{"a backlog that fills both slots for a load time", m(14, 2, 0.3, 2), figures{}, true},
		{"goes by the others' figures", m(3, 1, 0, 0), figures{run: 1, load: 2}, true},
		{"too little by the others' figures", m(1, 1, 0, 0), figures{run: 1, load: 2}, false},
		{"no figures anywhere", m(1, 1, 0, 0), figures{}, true},
	}
	for _, tt := range tests {
		if got := tt.m.backlogFull(tt.prior); got != tt.want {
			t.Errorf("%s: backlogFull = %v, want %v", tt.name, got, tt.want)
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
				chooseVictims(cands, n*300, evictRule{scope: scopeAny})
			}
		})
	}
}
