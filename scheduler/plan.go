package scheduler

import (
	"sort"
	"time"
)

// victim describes an instance that might be evicted. It is a plain value so
// that chooseVictims is a pure function.
type victim struct {
	ID         int
	Model      string
	ReservedMB int
	LastUsed   time.Time
	Busy       bool // jobs in flight: may only be drained
	Queued     int  // jobs waiting for its model
	Pinned     bool
	Demand     float64 // its model's recent arrivals (see demand)
}

// evictScope says which instances a load may displace.
type evictScope int

const (
	// scopeIdleNoWork: idle instances whose model has nothing queued.
	scopeIdleNoWork evictScope = iota
	// scopeAny: any unpinned instance; busy ones are drained, not killed.
	scopeAny
	// scopeNone: nothing; the load takes only memory that is free.
	scopeNone
)

// evictRule is what a load may displace and in which order.
type evictRule struct {
	scope evictScope
	// byDemand (policy batch) orders every instance by its model's
	// demand alone, the least first, then least recently used, whether it
	// is idle, busy or has work queued: what is least likely to be needed
	// soon goes first. A model with queued work is drained, and under
	// batch runs that work first, so its queue costs the load a short
	// wait, not another load; the model in steady use that stays would
	// cost one.
	byDemand bool
	// capped admits only victims whose demand is at most maxDemand.
	capped    bool
	maxDemand float64
}

// rank orders victims by class: the lower, the sooner evicted.
func (r evictRule) rank(v victim) int {
	switch {
	case r.byDemand:
		return 0
	case v.Busy:
		return 2
	case v.Queued > 0:
		return 1
	}
	return 0
}

// chooseVictims picks instances to free at least needMB, or reports false when
// even all eligible instances are not enough. Preference: idle with no queued
// work, then idle with queued work, then busy, least recently used first
// within each; under byDemand, least demand first, then least recently
// used. After the greedy pass,
// victims that turn out unnecessary are dropped, latest choices first, so
// the set is small.
func chooseVictims(cands []victim, needMB int, rule evictRule) ([]victim, bool) {
	if needMB <= 0 {
		return nil, true
	}
	var pool []victim
	for _, v := range cands {
		if v.Pinned {
			continue
		}
		if rule.scope == scopeNone || rule.scope == scopeIdleNoWork && (v.Busy || v.Queued > 0) {
			continue
		}
		if rule.capped && v.Demand > rule.maxDemand {
			continue
		}
		pool = append(pool, v)
	}
	sort.SliceStable(pool, func(a, b int) bool {
		x, y := pool[a], pool[b]
		if ra, rb := rule.rank(x), rule.rank(y); ra != rb {
			return ra < rb
		}
		if rule.byDemand && x.Demand != y.Demand {
			return x.Demand < y.Demand
		}
		if !x.LastUsed.Equal(y.LastUsed) {
			return x.LastUsed.Before(y.LastUsed)
		}
		return x.ID < y.ID
	})
	var chosen []victim
	freed := 0
	for _, v := range pool {
		if freed >= needMB {
			break
		}
		chosen = append(chosen, v)
		freed += v.ReservedMB
	}
	if freed < needMB {
		return nil, false
	}
	// Drop victims that are not needed, latest choices first.
	for i := len(chosen) - 1; i >= 0; i-- {
		if freed-chosen[i].ReservedMB >= needMB {
			freed -= chosen[i].ReservedMB
			chosen = append(chosen[:i], chosen[i+1:]...)
		}
	}
	return chosen, true
}

// candidate is a model that has queued work (or a preload wish) and no
// instance.
type candidate struct {
	Model    string
	Priority int
	Seq      uint64
	Since    time.Time // when its oldest waiting job arrived
	HasHead  bool      // false for a preload wish without jobs
	Full     bool      // its backlog alone keeps its slots busy for a load time
	Demand   float64   // its recent arrivals (see demand)
	Rivals   int       // other models with jobs waiting for a load
	// Swap is how long its load would keep the memory it takes from
	// another waiting model: its load time and its backlog's run.
	Swap time.Duration
	// Due is when policy batch begins its load even if that means
	// evicting a model in use (see setDue).
	Due time.Time
}

// setDue sets when each head's load is due under policy batch, given that
// about lanes waiting models fit side by side, and counts its rivals. A head is due when its
// oldest job has waited maxWait less dueLead, or earlier when the heads
// due after it would otherwise find every lane still busy with an earlier
// swap and start late: working back from the last, each takes the lane
// whose next swap starts latest and must start its own swap by then, less
// its swap time. So a run of heads falling due together is spread out
// ahead of time, not served one after another past max_wait.
func setDue(cs []candidate, maxWait time.Duration, lanes int) {
	var heads []*candidate
	for k := range cs {
		if cs[k].HasHead {
			cs[k].Due = cs[k].Since.Add(maxWait - dueLead)
			heads = append(heads, &cs[k])
		}
	}
	for _, c := range heads {
		c.Rivals = len(heads) - 1
	}
	sort.SliceStable(heads, func(a, b int) bool { return heads[a].Due.After(heads[b].Due) })
	next := make([]time.Time, max(lanes, 1)) // per lane: when its next swap starts (zero: none)
	for _, c := range heads {
		l := latestLane(next)
		if !next[l].IsZero() {
			if by := next[l].Add(-c.Swap); by.Before(c.Due) {
				c.Due = by
			}
		}
		next[l] = c.Due
	}
}

// latestLane is a lane with no swap planned, else the one whose next swap
// starts latest.
func latestLane(next []time.Time) int {
	best := 0
	for l, t := range next {
		if t.IsZero() {
			return l
		}
		if t.After(next[best]) {
			best = l
		}
	}
	return best
}

// orderCandidates sorts by priority (higher first), then arrival; preload
// wishes without jobs come last.
func orderCandidates(cs []candidate) {
	sort.SliceStable(cs, func(a, b int) bool {
		x, y := cs[a], cs[b]
		if x.HasHead != y.HasHead {
			return x.HasHead
		}
		if x.Priority != y.Priority {
			return x.Priority > y.Priority
		}
		if !x.Since.Equal(y.Since) {
			return x.Since.Before(y.Since)
		}
		if x.Seq != y.Seq {
			return x.Seq < y.Seq
		}
		return x.Model < y.Model
	})
}

// dueLead is how much before max_wait policy batch begins a swap: the
// loop plans on events and on a 250 ms tick, and a victim must stop and
// give its memory back first, so the load starts about at max_wait.
const dueLead = 200 * time.Millisecond

// ruleFor says how far a load for c may go to make room under policy p.
// Fifo displaces anything for the oldest job. Batch displaces anything,
// least demand first (see evictRule), once c is due (see setDue: its
// oldest job has waited max_wait less dueLead, or earlier when waiting
// models crowd the lanes). Before that it displaces only idle instances
// with nothing queued: any of them when c's backlog alone is worth a load
// (c.Full); none while other models wait too (c.Rivals), since memory is
// then contended and an early load for a few jobs cuts short both its
// own batch and that of the model it displaces; and when c waits alone,
// only those whose model is in no more demand than c's: a model in steady
// use is not swapped out for a lone job, which gathers company until due.
func ruleFor(p Policy, c candidate, now time.Time) evictRule {
	switch {
	case !c.HasHead:
		return evictRule{scope: scopeIdleNoWork}
	case p == PolicyFIFO:
		return evictRule{scope: scopeAny}
	case !now.Before(c.Due):
		return evictRule{scope: scopeAny, byDemand: true}
	case c.Full:
		return evictRule{scope: scopeIdleNoWork, byDemand: true}
	case c.Rivals > 0:
		return evictRule{scope: scopeNone}
	}
	return evictRule{scope: scopeIdleNoWork, byDemand: true, capped: true, maxDemand: c.Demand}
}

// backoff is the wait after n consecutive failures: 1s, 2s, 4s … 60s.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := time.Second << min(n-1, 6)
	return min(d, time.Minute)
}
