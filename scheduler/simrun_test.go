package scheduler

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// randomSpec builds a run from a seed: three or four models of which about
// two fit, jobs arriving over 20 s, faults during the first 15 s, and
// sometimes a shutdown.
func randomSpec(seed uint64) simSpec {
	rng := rand.New(rand.NewPCG(seed, 7))
	spec := simSpec{seed: seed, budget: 10000, maxAttempts: 3, limit: time.Hour,
		policy: PolicyBatch, maxWait: time.Duration(rng.IntN(10)) * time.Second}
	if rng.IntN(2) == 0 {
		spec.policy = PolicyFIFO
	}
	if rng.IntN(2) == 0 {
		spec.aging = time.Duration(1+rng.IntN(10)) * time.Second
	}
	names := []string{"a", "b", "c", "d"}[:3+rng.IntN(2)]
	for k, n := range names {
		m := simModel{name: n, mb: 3000 + 1000*rng.IntN(4), loadTime: time.Duration(100+rng.IntN(1900)) * time.Millisecond, slots: 1 + rng.IntN(3)}
		if k == 0 && rng.IntN(5) == 0 {
			m.pinned, m.mb = true, 3000
		}
		spec.models = append(spec.models, m)
	}
	for range 20 + rng.IntN(40) {
		prio := []int{-1, 0, 0, 0, 5}[rng.IntN(5)]
		spec.arrivals = append(spec.arrivals, simArrival{
			at:          time.Duration(rng.Int64N(int64(20 * time.Second))),
			model:       names[rng.IntN(len(names))],
			prio:        prio,
			duration:    time.Duration(50+rng.IntN(3000)) * time.Millisecond,
			interactive: rng.IntN(3) == 0,
		})
	}
	spec.faults = simFaults{until: 15 * time.Second, loadFail: 0.15, crashPerJob: 0.05,
		slowRelease: 3 * time.Second, slowStop: 0.2, cancelPerJob: 0.05}
	if rng.IntN(3) == 0 { // two GPUs: models pinned to one, split over both, or placed freely
		spec.devices = []int{10000, 6000}
		for k := range spec.models {
			switch rng.IntN(4) {
			case 0:
				spec.models[k].gpus = []int{1}
				spec.models[k].mb = min(spec.models[k].mb, 5000)
			case 1:
				spec.models[k].gpus = []int{0, 1}
			}
		}
	}
	if rng.IntN(5) == 0 {
		spec.shutdownAt = time.Duration(5+rng.IntN(20)) * time.Second
	}
	return spec
}

func TestSim(t *testing.T) {
	seeds := make([]uint64, 0, *simSeeds)
	if *simSeed != 0 {
		seeds = append(seeds, *simSeed)
	} else {
		for k := range *simSeeds {
			seeds = append(seeds, uint64(k+1))
		}
	}
	if testing.Short() && *simSeed == 0 {
		seeds = seeds[:min(len(seeds), 30)]
	}
	for _, seed := range seeds {
		x := newSim(randomSpec(seed))
		if errs := x.run(); len(errs) > 0 {
			t.Fatalf("seed %d: invariant broken:\n  %s\nreplay: go test ./scheduler -run 'TestSim$' -sim.seed=%d -v",
				seed, strings.Join(errs, "\n  "), seed)
		}
		if *simSeed != 0 {
			t.Logf("seed %d: %d steps, %d loads, %d jobs", seed, x.steps, x.loads, len(x.st.ids))
		}
	}
}

func TestSim_IsDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		a, b := newSim(randomSpec(seed)), newSim(randomSpec(seed))
		a.run()
		b.run()
		if a.steps != b.steps || a.loads != b.loads || a.now != b.now {
			t.Fatalf("seed %d: two runs differ: %d/%d steps, %d/%d loads, end %v/%v", seed, a.steps, b.steps, a.loads, b.loads, a.now, b.now)
		}
		for id, j := range a.st.jobs {
			if b.st.jobs[id].State != j.State {
				t.Fatalf("seed %d: job %s ended %s and %s", seed, id, j.State, b.st.jobs[id].State)
			}
		}
	}
}

// The invariants are not vacuous: a scheduler that loaded into memory an
// exited engine still holds is caught.
func TestSim_CatchesALoadThatRacesForMemory(t *testing.T) {
	caught := 0
	for seed := uint64(1); seed <= 50; seed++ {
		spec := randomSpec(seed)
		spec.skipReleaseWait = true
		spec.faults.slowRelease = 3 * time.Second
		spec.faults.until = time.Minute
		if errs := newSim(spec).run(); len(errs) > 0 && strings.Contains(errs[0], "engines hold") {
			caught++
		}
	}
	if caught == 0 {
		t.Fatal("no seed caught loads that ignore memory still being released")
	}
	t.Logf("%d of 50 seeds caught the bug", caught)
}
