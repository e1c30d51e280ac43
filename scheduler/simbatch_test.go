package scheduler

import (
	"testing"
	"time"
)

// twoExclusive are two models that do not fit together.
func twoExclusive() []simModel {
	return []simModel{
		{name: "a", mb: 6000, loadTime: 500 * time.Millisecond, slots: 2},
		{name: "b", mb: 6000, loadTime: 500 * time.Millisecond, slots: 2},
	}
}

func runBatch(t *testing.T, maxWait time.Duration, arrivals []simArrival) *sim {
	t.Helper()
	x := newSim(simSpec{seed: 1, models: twoExclusive(), budget: 10000, policy: PolicyBatch, maxWait: maxWait,
		maxAttempts: 3, arrivals: arrivals, limit: time.Hour})
	if errs := x.run(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(x.waits) != len(arrivals) {
		t.Fatalf("%d of %d jobs started", len(x.waits), len(arrivals))
	}
	return x
}

// A model drained for another under batch first runs the jobs it had
// queued, so they do not wait for a load of their own: a then b.
func TestSim_BatchDrainServesBacklog(t *testing.T) {
	var arrivals []simArrival
	for range 8 {
		arrivals = append(arrivals, simArrival{model: "a", duration: time.Second})
	}
	arrivals = append(arrivals, simArrival{at: 100 * time.Millisecond, model: "b", duration: 100 * time.Millisecond})
	if x := runBatch(t, time.Second, arrivals); x.loads != 2 {
		t.Fatalf("%d loads, want 2: a drained with work queued was loaded again", x.loads)
	}
}

// Under batch, a lone job for a model not loaded does not displace a
// model in steadier use before max_wait, even while that one is idle: a's
// jobs keep it loaded and b swaps in once.
func TestSim_BatchSwapsAtMaxWait(t *testing.T) {
	var arrivals []simArrival
	for k := range 10 {
		arrivals = append(arrivals, simArrival{at: time.Duration(k) * 500 * time.Millisecond, model: "a", duration: 100 * time.Millisecond})
	}
	arrivals = append(arrivals, simArrival{at: 5200 * time.Millisecond, model: "b", duration: 100 * time.Millisecond})
	for k := range 6 {
		arrivals = append(arrivals, simArrival{at: time.Duration(6+k) * time.Second, model: "a", duration: 100 * time.Millisecond})
	}
	x := runBatch(t, 10*time.Second, arrivals)
	if x.loads != 2 {
		t.Fatalf("%d loads, want 2: b swapped in before max_wait and a came back", x.loads)
	}
}

// threeExclusive are three models of which only one fits at a time.
func threeExclusive() []simModel {
	return append(twoExclusive(), simModel{name: "c", mb: 6000, loadTime: 500 * time.Millisecond, slots: 2})
}

// startWait is how long model's first job waited to start.
func startWait(t *testing.T, x *sim, model string) time.Duration {
	t.Helper()
	for _, id := range x.st.ids {
		if j := x.st.jobs[id]; j.Model == model {
			return j.StartedAt.Sub(j.CreatedAt)
		}
	}
	t.Fatalf("no job for %s", model)
	return 0
}

func runBatchModels(t *testing.T, models []simModel, maxWait time.Duration, arrivals []simArrival) *sim {
	t.Helper()
	x := newSim(simSpec{seed: 1, models: models, budget: 10000, policy: PolicyBatch, maxWait: maxWait,
		maxAttempts: 3, arrivals: arrivals, limit: time.Hour})
	if errs := x.run(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(x.waits) != len(arrivals) {
		t.Fatalf("%d of %d jobs started", len(x.waits), len(arrivals))
	}
	return x
}

// A lone job for a model not loaded swaps out at once an idle model in no
// more demand: nothing else waits for the memory.
func TestSim_BatchLoneJobSwapsAtOnce(t *testing.T) {
	x := runBatchModels(t, threeExclusive(), 10*time.Second, []simArrival{
		{model: "a", duration: 100 * time.Millisecond},
		{at: 3 * time.Second, model: "b", duration: 100 * time.Millisecond},
	})
	if w := startWait(t, x, "b"); w > 2*time.Second {
		t.Fatalf("b waited %v with a idle: want a swap at once", w)
	}
}

// While several models wait for the memory, none swaps out the idle model
// early: each waits until it is due, so it gathers company. b and c come
// while a is busy; a is idle from 1.4 s, and neither takes its place then.
func TestSim_BatchNoEarlySwapWhileOthersWait(t *testing.T) {
	x := runBatchModels(t, threeExclusive(), 10*time.Second, []simArrival{
		{model: "a", duration: 900 * time.Millisecond},
		{at: time.Second, model: "b", duration: 100 * time.Millisecond},
		{at: 1100 * time.Millisecond, model: "c", duration: 100 * time.Millisecond},
	})
	if w := startWait(t, x, "b"); w < 5*time.Second {
		t.Fatalf("b waited only %v: it swapped a out early while c waited too", w)
	}
	if w := startWait(t, x, "c"); w > 10*time.Second+time.Second {
		t.Fatalf("c waited %v: past max_wait and its load", w)
	}
	if x.loads != 3 {
		t.Fatalf("%d loads, want one each", x.loads)
	}
}

// Two models falling due close together with room for one at a time: the
// first loads ahead of its due time, so that the second still loads by
// its own and starts within max_wait and one load, not after both loads.
func TestSim_BatchSpreadsSwapsFallingDueTogether(t *testing.T) {
	var models []simModel
	for _, n := range []string{"a", "b", "c"} {
		models = append(models, simModel{name: n, mb: 6000, loadTime: 2 * time.Second, slots: 2})
	}
	var arrivals []simArrival
	for k := range 8 { // a in steady use until b and c are due
		arrivals = append(arrivals, simArrival{at: time.Duration(k) * 500 * time.Millisecond, model: "a", duration: 100 * time.Millisecond})
	}
	arrivals = append(arrivals,
		simArrival{at: time.Second, model: "b", duration: 100 * time.Millisecond},
		simArrival{at: 1200 * time.Millisecond, model: "c", duration: 100 * time.Millisecond})
	const maxWait = 5 * time.Second
	x := runBatchModels(t, models, maxWait, arrivals)
	if w := startWait(t, x, "c"); w > maxWait+2*time.Second+500*time.Millisecond {
		t.Fatalf("c waited %v: more than max_wait and one load, it queued behind b's swap", w)
	}
	if w := startWait(t, x, "b"); w < 3*time.Second {
		t.Fatalf("b waited only %v: it swapped a out while a was in steady use", w)
	}
}
