package scheduler

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// optLoads is the fewest loads with which any schedule can serve the
// arrivals on one device of budget MiB when every job starts within
// deadline of its arrival. It is exact for the relaxed model below, and
// that model only drops constraints a simulated run has, so no policy
// whose waits all stay within deadline loads fewer times.
//
// The relaxed model. A load of a model occupies its memory from its launch
// s to its end e, and the model can start jobs from s+load time until e;
// a job starts at one instant of its window [arrival, arrival+deadline]
// while a load of its model can start jobs. The loads occupying memory at
// any instant fit in budget. Slots, job durations, release delays and
// stop graces are dropped. A simulated run is such a schedule: an engine
// holds memory from launch until after it exits (the simulation fails if
// the sum exceeds the device), its jobs start after its load time and
// before it exits; so its loads are at least the optimum.
//
// Discretising it. Time is cut in steps of g, the largest step dividing
// every arrival and load time; deadline is rounded up to whole steps
// (which relaxes it). A load [s, e) becomes [⌈s⌉, ⌈e⌉) in steps: the loads
// in step k are those holding memory at instant k, so they fit; a job that
// started at τ starts at ⌈τ⌉, still within its rounded window and within
// [⌈s⌉+load, ⌈e⌉]. So a real schedule gives a step schedule with as many
// loads, and the step optimum is a lower bound.
//
// The search is a sweep over steps keeping, per state, the least loads.
// A state is, per model, either loaded (with the step its load completes)
// or not (with the arrival step of its earliest unserved job). At each
// step any model not loaded may be launched, and must be when its earliest
// unserved job would otherwise miss its window; a loaded model may end at
// the step its load completes or at an arrival of its own (ending at any
// other step can be moved back to one of these without losing a job). The
// models holding memory in each step must fit. ok is false when no
// schedule meets the deadline (a model larger than the budget).
func optLoads(arrivals []simArrival, models []simModel, budget int, deadline time.Duration) (loads int, ok bool) {
	if len(models) > maxOptModels {
		panic(fmt.Sprintf("optLoads: %d models, at most %d", len(models), maxOptModels))
	}
	o := newOptSearch(arrivals, models, budget, deadline)
	states := map[optState]int{o.initial(): 0}
	for k := range o.steps {
		states = o.prune(o.advance(states, k))
	}
	best := -1
	for s, c := range states {
		if s.resident == 0 && (best < 0 || c < best) {
			best = c
		}
	}
	return best, best >= 0
}

const maxOptModels = 8

// optState is, per model (bit k of resident, val[k]): loaded, with the
// step its load completes; or not, with the arrival step of its earliest
// unserved job (-1: none).
type optState struct {
	resident uint16
	val      [maxOptModels]int32
}

type optSearch struct {
	size     []int
	load     []int32 // load time in steps
	budget   int
	deadline int32     // in steps, rounded up
	steps    int32     // the sweep covers steps [0, steps)
	arriving []uint16  // per step: models with an arrival
	last     []int32   // per model: its last arrival step (-1: none)
	next     [][]int32 // per model and step: its next arrival after the step
}

func newOptSearch(arrivals []simArrival, models []simModel, budget int, deadline time.Duration) *optSearch {
	g := time.Duration(0)
	for _, a := range arrivals {
		g = gcdDuration(g, a.at)
	}
	for _, m := range models {
		if m.loadTime <= 0 {
			panic("optLoads: a load time must be positive")
		}
		g = gcdDuration(g, m.loadTime)
	}
	o := &optSearch{budget: budget, deadline: int32((deadline + g - 1) / g)}
	index := map[string]int{}
	for k, m := range models {
		index[m.name] = k
		o.size = append(o.size, m.mb)
		o.load = append(o.load, int32(m.loadTime/g))
		o.last = append(o.last, -1)
	}
	for _, a := range arrivals {
		k, step := index[a.model], int32(a.at/g)
		o.last[k] = max(o.last[k], step)
		o.steps = max(o.steps, step+o.deadline+1)
	}
	o.arriving = make([]uint16, o.steps)
	for _, a := range arrivals {
		o.arriving[a.at/g] |= 1 << index[a.model]
	}
	for m := range models {
		next := make([]int32, o.steps)
		after := int32(math.MaxInt32)
		for k := o.steps - 1; k >= 0; k-- {
			next[k] = after
			if o.arriving[k]&(1<<m) != 0 {
				after = k
			}
		}
		o.next = append(o.next, next)
	}
	return o
}

func gcdDuration(a, b time.Duration) time.Duration {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (o *optSearch) initial() optState {
	var s optState
	for k := range s.val {
		s.val[k] = -1
	}
	return s
}

func (o *optSearch) fits(set uint16) bool {
	mb := 0
	for k := range o.size {
		if set&(1<<k) != 0 {
			mb += o.size[k]
		}
	}
	return mb <= o.budget
}

// advance applies step k to every state: arrivals, then ends, then
// launches; the models left loaded hold memory in step k.
func (o *optSearch) advance(states map[optState]int, k int32) map[optState]int {
	next := map[optState]int{}
	for s, cost := range states {
		c, alive := o.classify(&s, k)
		if !alive {
			continue
		}
		for e := c.endable; ; e = (e - 1) & c.endable { // every subset
			for l := c.launchable; ; l = (l - 1) & c.launchable {
				o.branch(next, s, cost, k, s.resident&^c.mustEnd&^e, c.forced|l)
				if l == 0 {
					break
				}
			}
			if e == 0 {
				break
			}
		}
	}
	return next
}

// optChoices are the models that may end (endable), must end, must launch
// (forced) and may launch at a step.
type optChoices struct{ endable, mustEnd, forced, launchable uint16 }

// classify records the arrivals of step k in s and says what may happen;
// alive is false when a job has missed its window.
func (o *optSearch) classify(s *optState, k int32) (c optChoices, alive bool) {
	for m := range o.size {
		bit := uint16(1) << m
		loaded := s.resident&bit != 0
		switch {
		case loaded && s.val[m] <= k: // can start jobs: serves arrivals now
			if s.val[m] == k || o.arriving[k]&bit != 0 {
				c.endable |= bit
			}
			if o.last[m] <= k {
				c.mustEnd |= bit
			}
		case loaded: // loading: serves arrivals when ready, if in their window
			if o.arriving[k]&bit != 0 && s.val[m] > k+o.deadline {
				return c, false
			}
		default:
			if o.arriving[k]&bit != 0 && s.val[m] < 0 {
				s.val[m] = k
			}
			latest := s.val[m] + o.deadline - o.load[m] // last launch that serves it
			switch {
			case s.val[m] >= 0 && latest < k:
				return c, false
			case s.val[m] >= 0 && latest == k:
				c.forced |= bit
			case s.val[m] >= 0 || o.next[m][k] <= k+o.load[m]:
				// With nothing waiting, a launch can wait until the model's
				// next arrival is one load time away.
				c.launchable |= bit
			}
		}
	}
	if c.mustEnd&^c.endable != 0 {
		return c, false // stayed loaded past its use: a longer copy of another state
	}
	c.endable &^= c.mustEnd
	return c, true
}

// prune drops every state another one dominates: the same models loaded
// in the same way, no more loads, and for each other model nothing
// waiting or its earliest waiting job no earlier. Whatever completes the
// dominated state completes the other (its jobs are a subset, with later
// windows), so the optimum stays.
func (o *optSearch) prune(states map[optState]int) map[optState]int {
	groups := map[optState][]optState{}
	for s := range states {
		key := s
		for m := range o.size {
			if s.resident&(1<<m) == 0 {
				key.val[m] = 0
			}
		}
		groups[key] = append(groups[key], s)
	}
	kept := map[optState]int{}
	for _, group := range groups {
		slices.SortFunc(group, func(a, b optState) int { return states[a] - states[b] })
		var front []optState
		for _, s := range group {
			if !slices.ContainsFunc(front, func(f optState) bool { return o.dominates(f, s) }) {
				front = append(front, s)
				kept[s] = states[s]
			}
		}
	}
	return kept
}

// dominates says whether a waits for no more than b (same loaded models,
// cost compared by the caller).
func (o *optSearch) dominates(a, b optState) bool {
	for m := range o.size {
		if a.resident&(1<<m) == 0 && a.val[m] >= 0 && (b.val[m] < 0 || a.val[m] < b.val[m]) {
			return false
		}
	}
	return true
}

// branch records the state after step k where kept stay loaded and
// launched are launched.
func (o *optSearch) branch(next map[optState]int, s optState, cost int, k int32, kept, launched uint16) {
	if !o.fits(kept | launched) {
		return
	}
	n := s
	n.resident = kept | launched
	for m := range o.size {
		bit := uint16(1) << m
		switch {
		case launched&bit != 0:
			n.val[m] = k + o.load[m]
		case s.resident&bit != 0 && kept&bit == 0:
			n.val[m] = -1 // ended: it served every arrival so far
		case kept&bit != 0 && s.val[m] <= k:
			n.val[m] = 0 // ready: when no longer matters
		}
	}
	cost += bits.OnesCount16(launched)
	if c, seen := next[n]; !seen || cost < c {
		next[n] = cost
	}
}

func TestOptLoads_SmallCases(t *testing.T) {
	ab := func(n int, from time.Duration) []simArrival { // a, b, a, … every 400 ms
		var out []simArrival
		for _, a := range traceAlternate(n) {
			a.at += from
			out = append(out, a)
		}
		return out
	}
	cases := []struct {
		name     string
		arrivals []simArrival
		budget   int
		deadline time.Duration
		want     int // -1: no schedule
	}{
		{"a wait past the trace: one load each", ab(10, 0), 10000, time.Minute, 2},
		{"both fit, loaded ahead: one load each", ab(10, 2*time.Second), 12000, 0, 2},
		{"no wait but a load takes 2 s", ab(10, 0), 12000, 0, -1},
		{"no room and no wait", ab(10, 2*time.Second), 10000, 0, -1},
		{"model larger than the budget", ab(2, 0), 5000, time.Hour, -1},
		// a at 2.0 s and b at 2.4 s, 0.4 s wait: a ready by 2.4 s, b by
		// 2.8 s, but a load takes 2 s and they cannot overlap.
		{"two alternations within the wait of one load", ab(2, 2*time.Second), 10000, 400 * time.Millisecond, -1},
		// the same with 2.4 s wait: a from 0.0 to 2.0 s, b from 2.0 to 4.0 s.
		{"loads back to back", ab(2, 2*time.Second), 10000, 2400 * time.Millisecond, 2},
	}
	for _, c := range cases {
		got, ok := optLoads(c.arrivals, abcModels(), c.budget, c.deadline)
		if c.want < 0 && ok || c.want >= 0 && (!ok || got != c.want) {
			t.Errorf("%s: optLoads = %d, %v; want %d", c.name, got, ok, c.want)
		}
	}
}

// The sweep agrees with an exhaustive search over every step schedule on
// small random instances.
func TestOptLoads_MatchesExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	models := []simModel{
		{name: "a", mb: 6, loadTime: 2 * time.Second},
		{name: "b", mb: 5, loadTime: time.Second},
		{name: "c", mb: 4, loadTime: time.Second},
	}
	for n := range 200 {
		var arrivals []simArrival
		for range 1 + rng.IntN(5) {
			arrivals = append(arrivals, simArrival{at: time.Duration(rng.IntN(4)) * time.Second, model: models[rng.IntN(3)].name})
		}
		budget := []int{6, 9, 10, 11, 15}[rng.IntN(5)]
		deadline := time.Duration(rng.IntN(3)) * time.Second
		got, ok := optLoads(arrivals, models, budget, deadline)
		want, wantOK := exhaustiveLoads(arrivals, models, budget, int32(deadline/time.Second))
		if ok != wantOK || got != want {
			t.Fatalf("instance %d (%v, budget %d, wait %v): optLoads %d, %v; exhaustive %d, %v", n, arrivals, budget, deadline, got, ok, want, wantOK)
		}
	}
}

// exhaustiveLoads tries every set of models holding memory in each 1 s
// step: a model's run of steps [s, e) is one load, which starts jobs at
// instants s+load … e. Arrivals and load times are whole seconds.
func exhaustiveLoads(arrivals []simArrival, models []simModel, budget int, deadline int32) (int, bool) {
	var horizon int32
	for _, a := range arrivals {
		horizon = max(horizon, int32(a.at/time.Second)+deadline+1)
	}
	var sets []uint16 // the sets that fit
	for set := range uint16(1 << len(models)) {
		mb := 0
		for m := range models {
			if set&(1<<m) != 0 {
				mb += models[m].mb
			}
		}
		if mb <= budget {
			sets = append(sets, set)
		}
	}
	occupancy := make([]uint16, horizon)
	best := -1
	var try func(k int32)
	try = func(k int32) {
		if k == horizon {
			if loads, ok := servesAll(occupancy, arrivals, models, deadline); ok && (best < 0 || loads < best) {
				best = loads
			}
			return
		}
		for _, set := range sets {
			occupancy[k] = set
			try(k + 1)
		}
	}
	try(0)
	return best, best >= 0
}

func servesAll(occupancy []uint16, arrivals []simArrival, models []simModel, deadline int32) (int, bool) {
	loads := 0
	can := make([]map[int32]bool, len(models)) // instants at which each model can start jobs
	for m := range models {
		can[m] = map[int32]bool{}
		bit, steps := uint16(1)<<m, int32(len(occupancy))
		for s := int32(0); s < steps; s++ {
			if occupancy[s]&bit == 0 || s > 0 && occupancy[s-1]&bit != 0 {
				continue
			}
			loads++
			e := s
			for e < steps && occupancy[e]&bit != 0 {
				e++
			}
			for i := s + int32(models[m].loadTime/time.Second); i <= e; i++ {
				can[m][i] = true
			}
		}
	}
	for _, a := range arrivals {
		m := slices.IndexFunc(models, func(x simModel) bool { return x.name == a.model })
		at, served := int32(a.at/time.Second), false
		for i := at; i <= at+deadline; i++ {
			served = served || can[m][i]
		}
		if !served {
			return 0, false
		}
	}
	return loads, true
}

// Every simulated run loads at least the optimum for its own longest
// wait: the bound holds for the schedules the scheduler makes.
func TestOptLoads_BoundsEveryRun(t *testing.T) {
	for _, tr := range traces() {
		for _, policy := range []Policy{PolicyFIFO, PolicyBatch} {
			if policy == PolicyFIFO && tr.name != "bursts" {
				continue // waits of minutes: a slow search
			}
			x, errs := runTrace(tr, policy)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			longest := slices.Max(x.waits)
			opt, ok := optLoads(tr.arrivals, tr.models, traceBudget, longest)
			if !ok || x.loads < opt {
				t.Errorf("%s/%s: %d loads with waits up to %v, below the optimum %d (%v)", tr.name, policy, x.loads, longest, opt, ok)
			}
		}
	}
}
