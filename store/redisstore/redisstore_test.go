package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/store/redisstore"
	"github.com/vramcram/vramcram/store/redisstore/redistest"
	"github.com/vramcram/vramcram/store/storetest"
)

func newPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

func enqueue(t *testing.T, s *redisstore.Store, model string) store.Job {
	t.Helper()
	j := store.Job{ID: store.NewID(), Model: model, Type: "llm", Prompt: "p"}
	if err := s.Enqueue(context.Background(), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlowNode: node A's lease runs out, node B takes the job and
// completes it; A comes back with its own result, which is refused: the
// result is stored once.
func TestSlowNode(t *testing.T) {
	srv := redistest.Start(t)
	p := newPrefix()
	a := openRedis(t, srv, p, "node-a", storetest.Options{})
	j := enqueue(t, a, "m")
	if _, err := a.Claim("m"); err != nil {
		t.Fatal(err)
	}
	redisstore.Crash(a) // stops renewing, keeps its token (a stalled process)
	b := openRedis(t, srv, p, "node-b", storetest.Options{})
	waitFor(t, "the lease to expire", 10*time.Second, func() bool {
		g, err := b.Get(j.ID)
		return err == nil && g.State == store.JobStateQueued
	})
	c, err := b.Claim("m")
	if err != nil || c.ID != j.ID || c.Attempts != 2 {
		t.Fatalf("claim on b = %+v, %v", c, err)
	}
	// A third handle with A's name stands for A's process coming back and
	// completing: it holds no lease, so it is refused.
	a2 := openRedis(t, srv, p, "node-a2", storetest.Options{})
	if err := a2.Complete(j.ID, []byte("from a")); !errors.Is(err, store.ErrStateConflict) {
		t.Fatalf("complete without the lease: err = %v", err)
	}
	if err := b.Complete(j.ID, []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.Result(j.ID); string(r) != "from b" {
		t.Fatalf("result %q", r)
	}
}

// TestLeaseRenewal: a job that runs longer than its lease keeps it, because
// its node renews it; the deadline moves forward.
func TestLeaseRenewal(t *testing.T) {
	srv := redistest.Start(t)
	p := newPrefix()
	a := openRedis(t, srv, p, "node-a", storetest.Options{})
	b := openRedis(t, srv, p, "node-b", storetest.Options{}) // reaps too
	j := enqueue(t, a, "m")
	if _, err := a.Claim("m"); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	first := rdb.ZScore(context.Background(), p+"running", j.ID).Val()
	// Three lease periods: without renewal b would have requeued it.
	waitFor(t, "three lease periods of renewals", 10*time.Second, func() bool {
		return rdb.ZScore(context.Background(), p+"running", j.ID).Val() > first+3000
	})
	if g, _ := b.Get(j.ID); g.State != store.JobStateRunning || g.Attempts != 1 {
		t.Fatalf("job %+v, want still running on its first attempt", g)
	}
	if err := a.Complete(j.ID, []byte("ok")); err != nil {
		t.Fatal(err)
	}
}

// TestNodesClaimConcurrently: three nodes claim from the same queues;
// every job is claimed exactly once.
func TestNodesClaimConcurrently(t *testing.T) {
	srv := redistest.Start(t)
	p := newPrefix()
	var nodes []*redisstore.Store
	for k := range 3 {
		nodes = append(nodes, openRedis(t, srv, p, fmt.Sprintf("node-%d", k), storetest.Options{}))
	}
	const jobs = 300
	for k := range jobs {
		enqueue(t, nodes[k%3], fmt.Sprintf("m%d", k%4))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		for w := range 4 {
			wg.Go(func() {
				model := fmt.Sprintf("m%d", w)
				for {
					j, err := n.Claim(model)
					if errors.Is(err, store.ErrEmpty) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if prev, dup := seen[j.ID]; dup {
						t.Errorf("job %s claimed by %s and %s", j.ID, prev, n.Node())
					}
					seen[j.ID] = n.Node()
					mu.Unlock()
					if err := n.Complete(j.ID, []byte(n.Node())); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	if len(seen) != jobs {
		t.Fatalf("%d jobs claimed, want %d", len(seen), jobs)
	}
	for id, node := range seen {
		if r, err := nodes[0].Result(id); err != nil || string(r) != node {
			t.Fatalf("result of %s = %q, %v; want %s", id, r, err, node)
		}
	}
}

// TestOutage: with Redis down, submits fail with store.ErrUnavailable; a
// job that was running finishes and its result is written once Redis is
// back; nothing accepted before the outage is lost (appendonly).
func TestOutage(t *testing.T) {
	srv := redistest.Start(t)
	p := newPrefix()
	a := openRedis(t, srv, p, "node-a-long-lease", storetest.Options{})
	queued := enqueue(t, a, "m")
	run := enqueue(t, a, "n")
	if _, err := a.Claim("n"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	j := store.Job{ID: store.NewID(), Model: "m"}
	if err := a.Enqueue(context.Background(), &j); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("enqueue with redis down: err = %v, want ErrUnavailable", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Complete(run.ID, []byte("through the outage")) }()
	select {
	case err := <-done:
		t.Fatalf("complete returned %v while redis was down; want it to retry", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("complete after the outage: %v", err)
	}
	if r, err := a.Result(run.ID); err != nil || string(r) != "through the outage" {
		t.Fatalf("result %q, %v", r, err)
	}
	if g, err := a.Get(queued.ID); err != nil || g.State != store.JobStateQueued {
		t.Fatalf("job queued before the outage: %+v, %v", g, err)
	}
}

// TestRestartRecoversOwnJobs: a node that starts again under the same name
// requeues what its previous run left running, without waiting for the
// lease.
func TestRestartRecoversOwnJobs(t *testing.T) {
	srv := redistest.Start(t)
	p := newPrefix()
	s, err := redisstore.Open(context.Background(), redisstore.Options{URL: srv.URL(), Prefix: p, Node: "node-a", Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	j := enqueue(t, s, "m")
	if _, err := s.Claim("m"); err != nil {
		t.Fatal(err)
	}
	redisstore.Crash(s)
	var got []redisstore.Expired
	s2, err := redisstore.Open(context.Background(), redisstore.Options{URL: srv.URL(), Prefix: p, Node: "node-a", Lease: time.Hour,
		OnExpire: func(e []redisstore.Expired) { got = append(got, e...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if g, _ := s2.Get(j.ID); g.State != store.JobStateQueued || g.Attempts != 1 || s2.Recovered() != 1 || len(got) != 1 {
		t.Fatalf("after restart: %+v, recovered %d, expired %v", g, s2.Recovered(), got)
	}
}

func TestOpen_Unreachable(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	_, err := redisstore.Open(context.Background(), redisstore.Options{URL: srv.URL()})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("open with redis down: err = %v", err)
	}
	if _, err := redisstore.Open(context.Background(), redisstore.Options{URL: "http://x"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad url: err = %v", err)
	}
}
