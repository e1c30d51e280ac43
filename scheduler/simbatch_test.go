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
