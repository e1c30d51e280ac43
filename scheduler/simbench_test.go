package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Trace benchmarks: the same job traces run in the simulation under each
// policy. Reported per run: loads, makespan, p50/p99/max wait (arrival to
// start), and two offline optima of loads (optLoads): opt_loads for
// schedules that start every job within batch's own longest wait on the
// trace, a true lower bound on batch's loads, and opt_maxwait_loads for
// schedules that start every job within max_wait. Fifo waits far longer,
// so neither bounds it.

// abcModels are three models of which two fit together (a+c or b+c), not a+b.
func abcModels() []simModel {
	return []simModel{
		{name: "a", mb: 6000, loadTime: 2 * time.Second, slots: 2},
		{name: "b", mb: 6000, loadTime: 2 * time.Second, slots: 2},
		{name: "c", mb: 3000, loadTime: time.Second, slots: 2},
	}
}

func traceAlternate(n int) []simArrival {
	var out []simArrival
	for k := range n {
		out = append(out, simArrival{at: time.Duration(k) * 400 * time.Millisecond, model: []string{"a", "b"}[k%2], duration: 300 * time.Millisecond})
	}
	return out
}

func traceZipf(n int, models []string, seed uint64) []simArrival {
	rng := rand.New(rand.NewPCG(seed, 1))
	z := rand.NewZipf(rng, 1.2, 1, uint64(len(models)-1))
	var out []simArrival
	for k := range n {
		out = append(out, simArrival{at: time.Duration(k) * 400 * time.Millisecond, model: models[z.Uint64()], duration: 300 * time.Millisecond})
	}
	return out
}

func traceBursts(bursts, size int, seed uint64) []simArrival {
	rng := rand.New(rand.NewPCG(seed, 2))
	names := []string{"a", "b", "c"}
	var out []simArrival
	for k := range bursts {
		m := names[rng.IntN(len(names))]
		for j := range size {
			out = append(out, simArrival{at: time.Duration(k)*3*time.Second + time.Duration(j)*50*time.Millisecond, model: m, duration: 300 * time.Millisecond})
		}
	}
	return out
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}

type trace struct {
	name     string
	models   []simModel
	arrivals []simArrival
	// knownGap, when set, says why batch is known to load more than 1.2×
	// the optimum on this trace; the test fails if that stops being true.
	knownGap string
}

const traceBudget, traceMaxWait = 10000, 5 * time.Second

func traces() []trace {
	zipfNames := []string{"m1", "m2", "m3", "m4", "m5", "m6"}
	var zipfModels []simModel
	for _, n := range zipfNames {
		zipfModels = append(zipfModels, simModel{name: n, mb: 4500, loadTime: 2 * time.Second, slots: 2})
	}
	return []trace{
		{"alternate-ab", abcModels(), traceAlternate(200), ""},
		{"zipf-6", zipfModels, traceZipf(200, zipfNames, 42), ""},
		{"bursts", abcModels(), traceBursts(12, 15, 42), ""},
	}
}

func runTrace(tr trace, policy Policy) (*sim, []string) {
	x := newSim(simSpec{seed: 1, models: tr.models, budget: traceBudget, policy: policy, maxWait: traceMaxWait,
		maxAttempts: 3, arrivals: tr.arrivals, limit: time.Hour})
	return x, x.run()
}

// TestTraces_BatchGoals: on every trace batch loads no more than fifo and
// at most 1.2× the offline optimum for schedules as punctual as batch was
// (every job started within batch's longest wait), and its p99 wait stays
// within max_wait plus one load and one job.
func TestTraces_BatchGoals(t *testing.T) {
	for _, tr := range traces() {
		fifo, errs := runTrace(tr, PolicyFIFO)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		batch, errs := runTrace(tr, PolicyBatch)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		longest := slices.Max(batch.waits)
		opt, ok := optLoads(tr.arrivals, tr.models, traceBudget, longest)
		if !ok {
			t.Fatalf("%s: no schedule within %v, yet batch had one", tr.name, longest)
		}
		t.Logf("%s: batch %d loads (waits up to %v), fifo %d, optimum %d", tr.name, batch.loads, longest, fifo.loads, opt)
		if batch.loads > fifo.loads {
			t.Errorf("%s: batch %d loads > fifo %d", tr.name, batch.loads, fifo.loads)
		}
		if over := float64(batch.loads) > 1.2*float64(opt); over != (tr.knownGap != "") {
			if over {
				t.Errorf("%s: batch %d loads > 1.2× optimum %d", tr.name, batch.loads, opt)
			} else {
				t.Errorf("%s: batch %d loads is now within 1.2× optimum %d: drop the known gap", tr.name, batch.loads, opt)
			}
		} else if over {
			t.Logf("%s: known gap: batch %d loads = %.2f× optimum %d: %s", tr.name, batch.loads, float64(batch.loads)/float64(opt), opt, tr.knownGap)
		}
		limit := traceMaxWait + 2*time.Second + 300*time.Millisecond + 100*time.Millisecond
		if p99 := percentile(batch.waits, 0.99); p99 > limit {
			t.Errorf("%s: batch p99 wait %v > %v", tr.name, p99, limit)
		}
		if len(batch.waits) != len(tr.arrivals) {
			t.Errorf("%s: %d of %d jobs started", tr.name, len(batch.waits), len(tr.arrivals))
		}
	}
}

func BenchmarkTraces(b *testing.B) {
	for _, tr := range traces() {
		batch, errs := runTrace(tr, PolicyBatch)
		if len(errs) > 0 {
			b.Fatal(errs)
		}
		opt, _ := optLoads(tr.arrivals, tr.models, traceBudget, slices.Max(batch.waits))
		strict, _ := optLoads(tr.arrivals, tr.models, traceBudget, traceMaxWait)
		for _, policy := range []Policy{PolicyFIFO, PolicyBatch} {
			b.Run(fmt.Sprintf("%s/%s", tr.name, policy), func(b *testing.B) {
				var x *sim
				for b.Loop() {
					var errs []string
					if x, errs = runTrace(tr, policy); len(errs) > 0 {
						b.Fatal(errs)
					}
				}
				b.ReportMetric(float64(x.loads), "loads")
				b.ReportMetric(float64(opt), "opt_loads")
				b.ReportMetric(float64(strict), "opt_maxwait_loads")
				b.ReportMetric(x.lastFinish.Sub(x.start).Seconds(), "makespan_s")
				b.ReportMetric(percentile(x.waits, 0.50).Seconds(), "p50_wait_s")
				b.ReportMetric(percentile(x.waits, 0.99).Seconds(), "p99_wait_s")
				b.ReportMetric(slices.Max(x.waits).Seconds(), "max_wait_s")
			})
		}
	}
}

// The loop keeps moving averages of job and load times for ETAs.
func TestSim_AveragesForETA(t *testing.T) {
	x, errs := runTrace(traces()[2], PolicyBatch) // bursts: 300 ms jobs, 1-2 s loads
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, m := range x.s.snapshot().Models {
		if m.AvgJobSeconds < 0.29 || m.AvgJobSeconds > 0.31 {
			t.Errorf("%s: average job %.3f s, want 0.3", m.Name, m.AvgJobSeconds)
		}
		if m.AvgLoadSeconds < 1 || m.AvgLoadSeconds > 2.2 { // a load includes the wait for released memory
			t.Errorf("%s: average load %.3f s, want its load time", m.Name, m.AvgLoadSeconds)
		}
		if eta, ok := m.ETA(3); !ok || eta < m.AvgJobSeconds*2 {
			t.Errorf("%s: ETA of position 3 with 2 slots = %v, %v", m.Name, eta, ok)
		}
	}
}
