package store

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// TestPosition_FollowsAging: once aging reorders a queue, Position gives
// every job the place in which Claim really takes it.
func TestPosition_FollowsAging(t *testing.T) {
	const aging = time.Minute
	tb := setup(t, func(o *Options) { o.Aging = aging })
	old := tb.enqueue(t, "m", 0) // waits 10 minutes: effective priority 10
	tb.clock.Advance(10 * aging)
	high1 := tb.enqueue(t, "m", 5)
	high2 := tb.enqueue(t, "m", 5)
	low := tb.enqueue(t, "m", -3)

	want := []string{old.ID, high1.ID, high2.ID, low.ID} // old's 10 beats 5
	for k, id := range want {
		if pos, err := tb.s.Position(id); err != nil || pos != k {
			t.Errorf("position of job %d: %d, %v; want %d", k, pos, err, k)
		}
	}
	for k, id := range want {
		if j := tb.claim(t, "m"); j.ID != id {
			t.Fatalf("claim %d took %s, want %s", k, j.ID, id)
		}
	}
}

// TestPosition_MatchesClaimOrder: for random queues with aging, the
// positions of all queued jobs, read at one instant, are exactly the order
// in which Claim then takes them (the clock standing still).
func TestPosition_MatchesClaimOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	for round := range 20 {
		tb := setup(t, func(o *Options) { o.Aging = time.Minute })
		n := 5 + r.IntN(30)
		for range n {
			tb.enqueue(t, "m", r.IntN(21)-10)
			tb.clock.Advance(time.Duration(r.IntN(180)) * time.Second)
		}
		queued, err := tb.s.List(ListFilter{Model: "m", State: JobStateQueued})
		if err != nil {
			t.Fatal(err)
		}
		order := make([]string, len(queued))
		for _, j := range queued {
			pos, err := tb.s.Position(j.ID)
			if err != nil || pos < 0 || pos >= len(order) || order[pos] != "" {
				t.Fatalf("round %d: position of %s: %d, %v (duplicate or out of range)", round, j.ID, pos, err)
			}
			order[pos] = j.ID
		}
		for k, id := range order {
			j, err := tb.s.Claim("m")
			if err != nil || j.ID != id {
				t.Fatalf("round %d: claim %d took %s (%v), positions said %s", round, k, j.ID, err, id)
			}
		}
		if _, err := tb.s.Claim("m"); !errors.Is(err, ErrEmpty) {
			t.Fatalf("round %d: queue not empty: %v", round, err)
		}
	}
}
