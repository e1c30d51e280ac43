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
}

// evictScope says which instances a load may displace.
type evictScope int

const (
	// scopeIdleNoWork: idle instances whose model has nothing queued.
	scopeIdleNoWork evictScope = iota
	// scopeAny: any unpinned instance; busy ones are drained, not killed.
	scopeAny
)

// chooseVictims picks instances to free at least needMB, or reports false when
// even all eligible instances are not enough. Preference: idle with no queued
// work, then idle with queued work, then busy; within each, least recently used
// first. After the greedy pass, victims that turn out unnecessary are dropped,
// most recently used first, so the set is small.
func chooseVictims(cands []victim, needMB int, scope evictScope) ([]victim, bool) {
	if needMB <= 0 {
		return nil, true
	}
	var pool []victim
	for _, v := range cands {
		if v.Pinned {
			continue
		}
		if scope == scopeIdleNoWork && (v.Busy || v.Queued > 0) {
			continue
		}
		pool = append(pool, v)
	}
	rank := func(v victim) int {
		switch {
		case v.Busy:
			return 2
		case v.Queued > 0:
			return 1
		}
		return 0
	}
	sort.SliceStable(pool, func(a, b int) bool {
		ra, rb := rank(pool[a]), rank(pool[b])
		if ra != rb {
			return ra < rb
		}
		if !pool[a].LastUsed.Equal(pool[b].LastUsed) {
			return pool[a].LastUsed.Before(pool[b].LastUsed)
		}
		return pool[a].ID < pool[b].ID
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

// scopeFor says how far a load for c may go to make room under policy p.
func scopeFor(p Policy, c candidate, now time.Time, maxWait time.Duration) evictScope {
	if !c.HasHead {
		return scopeIdleNoWork
	}
	if p == PolicyFIFO || now.Sub(c.Since) >= maxWait {
		return scopeAny
	}
	return scopeIdleNoWork
}

// backoff is the wait after n consecutive failures: 1s, 2s, 4s … 60s.
func backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := time.Second << min(n-1, 6)
	return min(d, time.Minute)
}
