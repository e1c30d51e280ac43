package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// bundle is one test's queue and clock.
type bundle struct {
	q     Queue
	clock *Clock
	opts  Options
}

func setup(t *testing.T, h Harness, edit ...func(*Options)) *bundle {
	t.Helper()
	clock := NewClock()
	opts := Options{NowFunc: clock.Now}
	for _, f := range edit {
		f(&opts)
	}
	return &bundle{q: h.Open(t, opts), clock: clock, opts: opts}
}

func (b *bundle) enqueue(t *testing.T, model string, priority int) store.Job {
	t.Helper()
	j := store.Job{ID: store.NewID(), Model: model, Type: "llm", Prompt: "p", Priority: priority}
	if err := b.q.Enqueue(context.Background(), &j); err != nil {
		t.Fatalf("enqueue %s: %v", model, err)
	}
	return j
}

func (b *bundle) claim(t *testing.T, model string) store.Job {
	t.Helper()
	j, err := b.q.Claim(model)
	if err != nil {
		t.Fatalf("claim %s: %v", model, err)
	}
	return j
}

func (b *bundle) get(t *testing.T, id string) store.Job {
	t.Helper()
	j, err := b.q.Get(id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return j
}

func ids(jobs []store.Job) []string {
	out := make([]string, len(jobs))
	for k, j := range jobs {
		out[k] = j.ID
	}
	return out
}

func testEnqueueGet(t *testing.T, h Harness) {
	b := setup(t, h)
	in := store.Job{ID: "job-1", Model: "m", Type: "llm", Prompt: "hello", Params: []byte(`{"n_predict":4}`), Priority: 500,
		Endpoint: "", Body: nil}
	if err := b.q.Enqueue(context.Background(), &in); err != nil {
		t.Fatal(err)
	}
	if in.State != store.JobStateQueued || in.Seq == 0 || in.MaxAttempts != store.DefaultMaxAttempts ||
		in.Priority != store.MaxPriority || !in.CreatedAt.Equal(b.clock.Now()) {
		t.Fatalf("stored job %+v: want queued, seq>0, default attempts, clamped priority, created now", in)
	}
	got := b.get(t, "job-1")
	if got.ID != in.ID || got.Model != "m" || got.Prompt != "hello" || string(got.Params) != `{"n_predict":4}` ||
		got.State != store.JobStateQueued || got.Seq != in.Seq || got.Priority != store.MaxPriority ||
		!got.CreatedAt.Equal(in.CreatedAt) || got.Attempts != 0 {
		t.Fatalf("get = %+v, want %+v", got, in)
	}
	ep := store.Job{ID: "job-2", Model: "m", Type: "llm", Endpoint: "/v1/embeddings", Body: []byte(`{"input":"x"}`), MaxAttempts: 1}
	if err := b.q.Enqueue(context.Background(), &ep); err != nil {
		t.Fatal(err)
	}
	if g := b.get(t, "job-2"); g.Endpoint != "/v1/embeddings" || string(g.Body) != `{"input":"x"}` || g.MaxAttempts != 1 || g.Seq <= in.Seq {
		t.Fatalf("endpoint job = %+v", g)
	}
	dup := store.Job{ID: "job-1", Model: "m"}
	if err := b.q.Enqueue(context.Background(), &dup); !errors.Is(err, store.ErrStateConflict) {
		t.Fatalf("duplicate id: err = %v, want ErrStateConflict", err)
	}
	for _, bad := range []store.Job{{ID: "Bad/ID", Model: "m"}, {ID: "ok", Model: ""}, {ID: "ok2", Model: "m", MaxAttempts: -1}, {ID: "ok3", Model: "m", Params: []byte("{")}} {
		if err := b.q.Enqueue(context.Background(), &bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("enqueue %+v: err = %v, want ErrInvalid", bad, err)
		}
	}
	for _, id := range []string{"nope", "Bad/ID"} {
		if _, err := b.q.Get(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get %q: err = %v, want ErrNotFound", id, err)
		}
		if _, err := b.q.Cancel(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("cancel %q: err = %v, want ErrNotFound", id, err)
		}
		if _, err := b.q.Result(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("result %q: err = %v, want ErrNotFound", id, err)
		}
	}
}

func testOrdering(t *testing.T, h Harness) {
	b := setup(t, h)
	if _, err := b.q.Claim("m"); !errors.Is(err, store.ErrEmpty) {
		t.Fatalf("claim on empty queue: err = %v, want ErrEmpty", err)
	}
	low1 := b.enqueue(t, "m", -5)
	mid1 := b.enqueue(t, "m", 0)
	high := b.enqueue(t, "m", 7)
	mid2 := b.enqueue(t, "m", 0)
	other := b.enqueue(t, "other", 0)
	low2 := b.enqueue(t, "m", -5)
	want := []string{high.ID, mid1.ID, mid2.ID, low1.ID, low2.ID}
	for k, id := range want {
		if pos, err := b.q.Position(id); err != nil || pos != k {
			t.Errorf("position of %d-th = %d, %v", k, pos, err)
		}
	}
	var got []string
	for range want {
		got = append(got, b.claim(t, "m").ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("claim order %v, want %v", got, want)
	}
	if _, err := b.q.Claim("m"); !errors.Is(err, store.ErrEmpty) {
		t.Fatalf("claim after draining: err = %v", err)
	}
	if j := b.claim(t, "other"); j.ID != other.ID || j.State != store.JobStateRunning || j.Attempts != 1 || !j.StartedAt.Equal(b.clock.Now()) {
		t.Fatalf("claimed %+v", j)
	}
	if _, err := b.q.Position(other.ID); !errors.Is(err, store.ErrStateConflict) {
		t.Fatalf("position of a running job: err = %v", err)
	}
}

func testAging(t *testing.T, h Harness) {
	b := setup(t, h, func(o *Options) { o.Aging = time.Minute })
	old := b.enqueue(t, "m", -3)
	b.clock.Advance(5 * time.Minute) // old's effective priority: -3+5 = 2
	hi := b.enqueue(t, "m", 1)
	top := b.enqueue(t, "m", 4)
	heads, err := b.q.Heads()
	if err != nil || heads["m"].ID != top.ID {
		t.Fatalf("head = %+v, %v; want the priority-4 job", heads["m"], err)
	}
	if got := b.claim(t, "m"); got.ID != top.ID {
		t.Fatalf("first claim %s, want priority 4", got.ID)
	}
	if got := b.claim(t, "m"); got.ID != old.ID {
		t.Fatalf("second claim %s, want the aged job (effective 2 > 1)", got.ID)
	}
	if got := b.claim(t, "m"); got.ID != hi.ID {
		t.Fatalf("third claim %s, want %s", got.ID, hi.ID)
	}
}

// testPositionAging: for random queues with aging, the positions of all
// queued jobs, read at one instant, are exactly the order in which Claim
// then takes them (the clock standing still).
func testPositionAging(t *testing.T, h Harness) {
	r := rand.New(rand.NewPCG(7, 9))
	for round := range 6 {
		b := setup(t, h, func(o *Options) { o.Aging = time.Minute })
		n := 5 + r.IntN(30)
		for range n {
			b.enqueue(t, "m", r.IntN(21)-10)
			b.clock.Advance(time.Duration(r.IntN(180)) * time.Second)
		}
		order := make([]string, n)
		queued, err := b.q.List(store.ListFilter{Model: "m", State: store.JobStateQueued})
		if err != nil || len(queued) != n {
			t.Fatalf("round %d: list: %d jobs, %v", round, len(queued), err)
		}
		for _, j := range queued {
			pos, err := b.q.Position(j.ID)
			if err != nil || pos < 0 || pos >= n || order[pos] != "" {
				t.Fatalf("round %d: position of %s: %d, %v (duplicate or out of range)", round, j.ID, pos, err)
			}
			order[pos] = j.ID
		}
		for k, id := range order {
			if j := b.claim(t, "m"); j.ID != id {
				t.Fatalf("round %d: claim %d took %s, positions said %s", round, k, j.ID, id)
			}
		}
	}
}

func testTransitions(t *testing.T, h Harness) {
	b := setup(t, h)
	final := []store.JobState{store.JobStateCompleted, store.JobStateFailed, store.JobStateCancelled}
	// Each case has a model of its own, so refused ones leave no head behind.
	makeJob := func(t *testing.T, st store.JobState) store.Job {
		model := t.Name()
		j := b.enqueue(t, model, 0)
		switch st {
		case store.JobStateQueued:
			return j
		}
		c := b.claim(t, model)
		if c.ID != j.ID {
			t.Fatalf("claimed %s, want %s", c.ID, j.ID)
		}
		var err error
		switch st {
		case store.JobStateCompleted:
			err = b.q.Complete(j.ID, []byte("r"))
		case store.JobStateFailed:
			err = b.q.Fail(j.ID, "boom")
		case store.JobStateCancelled:
			_, err = b.q.Cancel(j.ID)
		}
		if err != nil {
			t.Fatalf("make %s: %v", st, err)
		}
		return b.get(t, j.ID)
	}
	type op struct {
		name string
		do   func(id string) error
		from []store.JobState
		to   store.JobState
	}
	ops := []op{
		{"Complete", func(id string) error { return b.q.Complete(id, []byte("ok")) }, []store.JobState{store.JobStateRunning}, store.JobStateCompleted},
		{"Fail", func(id string) error { return b.q.Fail(id, "bad") }, []store.JobState{store.JobStateQueued, store.JobStateRunning}, store.JobStateFailed},
		{"Cancel", func(id string) error { _, err := b.q.Cancel(id); return err }, []store.JobState{store.JobStateQueued, store.JobStateRunning}, store.JobStateCancelled},
		{"Release", func(id string) error { return b.q.Release(id) }, []store.JobState{store.JobStateRunning}, store.JobStateQueued},
		{"Requeue", func(id string) error { _, err := b.q.Requeue(id, "again"); return err }, []store.JobState{store.JobStateRunning}, store.JobStateQueued},
	}
	for _, o := range ops {
		for _, from := range append([]store.JobState{store.JobStateQueued, store.JobStateRunning}, final...) {
			t.Run(fmt.Sprintf("%s/%s", o.name, from), func(t *testing.T) {
				j := makeJob(t, from)
				err := o.do(j.ID)
				after := b.get(t, j.ID)
				if !slices.Contains(o.from, from) {
					if !errors.Is(err, store.ErrStateConflict) {
						t.Fatalf("err = %v, want ErrStateConflict", err)
					}
					if after.State != from {
						t.Fatalf("state %s after a refused %s, want %s", after.State, o.name, from)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if after.State != o.to {
					t.Fatalf("state %s, want %s", after.State, o.to)
				}
				if o.to.Final() && !after.FinishedAt.Equal(b.clock.Now()) {
					t.Fatalf("finished at %v, want %v", after.FinishedAt, b.clock.Now())
				}
				if o.to == store.JobStateQueued {
					if after.Seq != j.Seq || !after.StartedAt.IsZero() {
						t.Fatalf("requeued job %+v: want its original seq and no start time", after)
					}
					if pos, err := b.q.Position(j.ID); err != nil || pos != 0 {
						t.Fatalf("position %d, %v; want 0", pos, err)
					}
				}
				if o.name == "Release" && after.Attempts != 0 {
					t.Fatalf("attempts %d after release, want 0", after.Attempts)
				}
				if o.name == "Complete" {
					if r, err := b.q.Result(j.ID); err != nil || string(r) != "ok" {
						t.Fatalf("result %q, %v", r, err)
					}
				}
			})
		}
	}
}

func testRetry(t *testing.T, h Harness) {
	b := setup(t, h)
	first := store.Job{ID: "retry-1", Model: "m", MaxAttempts: 2}
	if err := b.q.Enqueue(context.Background(), &first); err != nil {
		t.Fatal(err)
	}
	later := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	st, err := b.q.Requeue(first.ID, "engine crashed")
	if err != nil || st != store.JobStateQueued {
		t.Fatalf("requeue = %s, %v", st, err)
	}
	j := b.claim(t, "m") // back at its original place, ahead of later
	if j.ID != first.ID || j.Attempts != 2 || j.Error != "engine crashed" {
		t.Fatalf("second claim %+v", j)
	}
	st, err = b.q.Requeue(first.ID, "crashed again")
	if err != nil || st != store.JobStateFailed {
		t.Fatalf("requeue without attempts left = %s, %v", st, err)
	}
	if g := b.get(t, first.ID); g.State != store.JobStateFailed || g.Error != "crashed again" || g.FinishedAt.IsZero() {
		t.Fatalf("job %+v", g)
	}
	if j := b.claim(t, "m"); j.ID != later.ID {
		t.Fatalf("claimed %s, want %s", j.ID, later.ID)
	}
	if err := b.q.Complete(later.ID, nil); err != nil {
		t.Fatal(err)
	}
	if g := b.get(t, later.ID); g.State != store.JobStateCompleted || g.Error != "" {
		t.Fatalf("job %+v", g)
	}
	if r, err := b.q.Result(later.ID); err != nil || len(r) != 0 {
		t.Fatalf("empty result = %q, %v", r, err)
	}
}

// testCompleteTwice: a result written twice (a slow node that comes back)
// is stored once: the second Complete is refused and leaves the first.
func testCompleteTwice(t *testing.T, h Harness) {
	b := setup(t, h)
	j := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	if err := b.q.Complete(j.ID, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := b.q.Complete(j.ID, []byte("second")); !errors.Is(err, store.ErrStateConflict) {
		t.Fatalf("second complete: err = %v, want ErrStateConflict", err)
	}
	if r, err := b.q.Result(j.ID); err != nil || string(r) != "first" {
		t.Fatalf("result %q, %v; want first", r, err)
	}
	c := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	if _, err := b.q.Cancel(c.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.q.Complete(c.ID, []byte("late")); !errors.Is(err, store.ErrStateConflict) {
		t.Fatalf("complete after cancel: err = %v", err)
	}
	if _, err := b.q.Result(c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("result of a cancelled job: err = %v, want ErrNotFound", err)
	}
}

func testQueueFull(t *testing.T, h Harness) {
	b := setup(t, h, func(o *Options) { o.MaxQueued = 2 })
	a := b.enqueue(t, "m", 0)
	b.enqueue(t, "n", 0)
	over := store.Job{ID: store.NewID(), Model: "m"}
	if err := b.q.Enqueue(context.Background(), &over); !errors.Is(err, store.ErrQueueFull) {
		t.Fatalf("enqueue at the cap: err = %v, want ErrQueueFull", err)
	}
	b.claim(t, "m")
	if err := b.q.Enqueue(context.Background(), &over); err != nil {
		t.Fatalf("enqueue after a claim: %v", err)
	}
	// Coming back to the queue is never refused.
	if err := b.q.Release(a.ID); err != nil {
		t.Fatalf("release at the cap: %v", err)
	}
	d, err := b.q.Depths()
	if err != nil || d["m"] != 2 || d["n"] != 1 {
		t.Fatalf("depths %v, %v", d, err)
	}
}

func testList(t *testing.T, h Harness) {
	b := setup(t, h)
	var all []store.Job
	for k := range 6 {
		all = append(all, b.enqueue(t, []string{"a", "b"}[k%2], 0))
	}
	run := b.claim(t, "a") // all[0]
	newest := func(js []store.Job) []string {
		out := ids(js)
		slices.Reverse(out)
		return out
	}
	check := func(name string, f store.ListFilter, want []string) {
		t.Helper()
		got, err := b.q.List(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(ids(got), want) {
			t.Errorf("%s: %v, want %v", name, ids(got), want)
		}
	}
	check("all", store.ListFilter{}, newest(all))
	check("limit", store.ListFilter{Limit: 2}, newest(all)[:2])
	check("page", store.ListFilter{Limit: 2, BeforeSeq: all[4].Seq}, []string{all[3].ID, all[2].ID})
	check("model", store.ListFilter{Model: "b"}, []string{all[5].ID, all[3].ID, all[1].ID})
	check("running", store.ListFilter{State: store.JobStateRunning}, []string{run.ID})
	check("queued a", store.ListFilter{State: store.JobStateQueued, Model: "a"}, []string{all[4].ID, all[2].ID})
	if _, err := b.q.List(store.ListFilter{State: "bogus"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("unknown state: err = %v", err)
	}
	rs, err := b.q.Running()
	if err != nil || !slices.Equal(ids(rs), []string{run.ID}) {
		t.Fatalf("running = %v, %v", ids(rs), err)
	}
}

func testViews(t *testing.T, h Harness) {
	b := setup(t, h)
	b.enqueue(t, "a", 0)
	b.enqueue(t, "a", 5)
	b.enqueue(t, "a", 5)
	bj := b.enqueue(t, "b", -2)
	d, err := b.q.Depths()
	if err != nil || len(d) != 2 || d["a"] != 3 || d["b"] != 1 {
		t.Fatalf("depths %v, %v", d, err)
	}
	qd, err := b.q.QueueDepths()
	if err != nil || qd["a"][5] != 2 || qd["a"][0] != 1 || qd["b"][-2] != 1 || len(qd["a"]) != 2 {
		t.Fatalf("queue depths %v, %v", qd, err)
	}
	heads, err := b.q.Heads()
	if err != nil || heads["a"].Priority != 5 || heads["b"].ID != bj.ID || len(heads) != 2 {
		t.Fatalf("heads %v, %v", heads, err)
	}
	b.claim(t, "b")
	if d, _ := b.q.Depths(); len(d) != 1 {
		t.Fatalf("depths after the last b left: %v", d)
	}
}

func testCrashRecovery(t *testing.T, h Harness) {
	b := setup(t, h)
	job := b.enqueue(t, "m", 0)
	last := store.Job{ID: "one-shot", Model: "m", MaxAttempts: 1}
	if err := b.q.Enqueue(context.Background(), &last); err != nil {
		t.Fatal(err)
	}
	queued := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	b.claim(t, "m")
	q2 := h.Crash(t, b.q, b.opts)
	deadline := time.Now().Add(h.RecoveryWait)
	for {
		j, err := q2.Get(job.ID)
		if err != nil {
			t.Fatal(err)
		}
		l, err := q2.Get(last.ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == store.JobStateQueued && l.State == store.JobStateFailed {
			if j.Attempts != 1 || j.Seq != job.Seq || j.Error == "" || l.Error == "" {
				t.Fatalf("recovered %+v and %+v: want the attempt counted, the seq kept, a reason", j, l)
			}
			break
		}
		if j.State != store.JobStateRunning || time.Now().After(deadline) {
			t.Fatalf("after the crash: %s is %s, %s is %s", j.ID, j.State, l.ID, l.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The recovered job is first again, ahead of the one queued after it.
	c, err := q2.Claim("m")
	if err != nil || c.ID != job.ID || c.Attempts != 2 {
		t.Fatalf("claim after recovery = %+v, %v", c, err)
	}
	if err := q2.Complete(c.ID, []byte("done")); err != nil {
		t.Fatal(err)
	}
	if g, _ := q2.Get(queued.ID); g.State != store.JobStateQueued || g.Attempts != 0 {
		t.Fatalf("untouched queued job %+v", g)
	}
}

func testConcurrentClaimers(t *testing.T, h Harness) {
	b := setup(t, h)
	const jobs, workers = 200, 8
	models := []string{"a", "b"}
	for k := range jobs {
		b.enqueue(t, models[k%2], k%3)
	}
	type claimed struct{ id, by string }
	out := make(chan claimed, jobs)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			model := models[w%2]
			for {
				j, err := b.q.Claim(model)
				if errors.Is(err, store.ErrEmpty) {
					errs <- nil
					return
				}
				if err == nil {
					err = b.q.Complete(j.ID, []byte(j.ID))
				}
				if err != nil {
					errs <- err
					return
				}
				out <- claimed{j.ID, model}
			}
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(out)
	seen := map[string]bool{}
	for c := range out {
		if seen[c.id] {
			t.Fatalf("job %s claimed twice", c.id)
		}
		seen[c.id] = true
	}
	if len(seen) != jobs {
		t.Fatalf("%d jobs claimed, want %d", len(seen), jobs)
	}
	all, err := b.q.List(store.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range all {
		r, err := b.q.Result(j.ID)
		if j.State != store.JobStateCompleted || j.Attempts != 1 || err != nil || !bytes.Equal(r, []byte(j.ID)) {
			t.Fatalf("job %+v result %q %v", j, r, err)
		}
	}
}

func testRetention(t *testing.T, h Harness) {
	b := setup(t, h)
	old := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	if err := b.q.Complete(old.ID, []byte("r")); err != nil {
		t.Fatal(err)
	}
	gone := b.enqueue(t, "m", 0)
	if _, err := b.q.Cancel(gone.ID); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(2 * time.Hour)
	cut := b.clock.Now().Add(-time.Hour)
	recent := b.enqueue(t, "m", 0)
	b.claim(t, "m")
	if err := b.q.Complete(recent.ID, []byte("r")); err != nil {
		t.Fatal(err)
	}
	waiting := b.enqueue(t, "m", 0)
	n, err := b.q.Cleanup(cut)
	if err != nil || n != 2 {
		t.Fatalf("cleanup = %d, %v; want 2", n, err)
	}
	for _, id := range []string{old.ID, gone.ID} {
		if _, err := b.q.Get(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get %s after cleanup: %v", id, err)
		}
	}
	if _, err := b.q.Result(old.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("result after cleanup: %v", err)
	}
	if r, err := b.q.Result(recent.ID); err != nil || string(r) != "r" {
		t.Errorf("recent result %q, %v", r, err)
	}
	if g := b.get(t, waiting.ID); g.State != store.JobStateQueued {
		t.Errorf("queued job %+v", g)
	}
	l, _ := b.q.List(store.ListFilter{})
	if !slices.Equal(ids(l), []string{waiting.ID, recent.ID}) {
		t.Errorf("list after cleanup %v", ids(l))
	}
}

func testLearnedVRAM(t *testing.T, h Harness) {
	b := setup(t, h)
	if err := b.q.SetLearnedVRAM("m", 1234); err != nil {
		t.Fatal(err)
	}
	if err := b.q.SetLearnedVRAM("m", 1500); err != nil {
		t.Fatal(err)
	}
	if err := b.q.SetLearnedVRAM("", 1); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty model: err = %v", err)
	}
	got, err := b.q.LearnedVRAM()
	if err != nil || len(got) != 1 || got["m"] != 1500 {
		t.Fatalf("learned %v, %v", got, err)
	}
}
