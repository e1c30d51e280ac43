package store

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path) // never returns
	}
	goleak.VerifyTestMain(m)
}

// testClock is a NowFunc that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openTest opens path; cleanup runs Check (unless the test closed the store
// itself) and then Close.
func openTest(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("check at cleanup: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close at cleanup: %v", err)
		}
	})
	return s
}

type testBundle struct {
	s     *Store
	clock *testClock
	path  string
}

func setup(t testing.TB, opts ...func(*Options)) *testBundle {
	t.Helper()
	clock := newTestClock()
	o := Options{NoSync: true, NowFunc: clock.Now}
	for _, f := range opts {
		f(&o)
	}
	path := filepath.Join(t.TempDir(), "sub", "vramcram.db")
	return &testBundle{s: openTest(t, path, o), clock: clock, path: path}
}

// enqueue adds a job for model with priority and returns it as stored.
func (tb *testBundle) enqueue(t testing.TB, model string, priority int) Job {
	t.Helper()
	j := Job{ID: NewID(), Model: model, Type: "llm", Prompt: "hello", Priority: priority}
	if err := tb.s.Enqueue(context.Background(), &j); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return j
}

func (tb *testBundle) get(t testing.TB, id string) Job {
	t.Helper()
	j, err := tb.s.Get(id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return j
}

func (tb *testBundle) claim(t testing.TB, model string) Job {
	t.Helper()
	j, err := tb.s.Claim(model)
	if err != nil {
		t.Fatalf("claim %s: %v", model, err)
	}
	return j
}

func (tb *testBundle) check(t testing.TB) {
	t.Helper()
	if err := tb.s.Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
}

func ids(jobs []Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func TestJobState(t *testing.T) {
	t.Parallel()
	final := map[JobState]bool{JobStateCompleted: true, JobStateFailed: true, JobStateCancelled: true}
	if got := len(JobStates()); got != 5 {
		t.Fatalf("JobStates: %d states", got)
	}
	for _, s := range JobStates() {
		if s.Final() != final[s] {
			t.Errorf("%s.Final() = %t", s, s.Final())
		}
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	for _, s := range []JobState{"", "Queued", "done"} {
		if s.Valid() || s.Final() {
			t.Errorf("%q: valid %t final %t", s, s.Valid(), s.Final())
		}
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"0123456789abcdefghij", true},
		{"job-1_x", true},
		{strings.Repeat("a", MaxIDLen), true},
		{"", false},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"ABC", false},
		{"-abc", false},
		{"_abc", false},
		{".abc", false},
		{"a.b", false},
		{"../etc", false},
		{"a/b", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %t, want %t", tt.id, got, tt.want)
		}
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		id := NewID()
		if len(id) != 20 || !ValidID(id) || strings.Trim(id, idAlphabet) != "" {
			t.Fatalf("NewID() = %q", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
		for _, c := range id {
			counts[c]++
		}
	}
	if len(counts) != 36 {
		t.Errorf("40000 characters used %d of 36 symbols", len(counts))
	}
}

// IDs sort by creation time, so the jobs bucket grows at its end: a later
// millisecond's ID sorts after an earlier one's whatever their random parts.
func TestNewIDOrder(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	prev := newIDAt(base)
	for i := range 2000 {
		at := base.Add(time.Duration(i+1) * time.Millisecond)
		id := newIDAt(at)
		if !ValidID(id) || id <= prev {
			t.Fatalf("newIDAt(%v) = %q, not after %q", at, id, prev)
		}
		prev = id
	}
	if a, b := newIDAt(base), newIDAt(base); a[:idTimeLen] != b[:idTimeLen] || a[idTimeLen:] == b[idTimeLen:] {
		t.Errorf("same millisecond: %q and %q: want the same time prefix and different random parts", a, b)
	}
	if got := newIDAt(time.UnixMilli(36*36 + 35)); got[:idTimeLen] != "00000010z" {
		t.Errorf("time prefix of ms 1331 = %q, want 00000010z", got[:idTimeLen])
	}
}

func TestQueueKey(t *testing.T) {
	t.Parallel()
	// In claim order: higher priority first, then lower seq.
	order := []struct {
		prio int
		seq  uint64
	}{
		{MaxPriority, 9}, {MaxPriority + 50, 10}, {5, 1}, {5, 2}, {5, 1 << 40}, {0, 1}, {0, 3}, {-1, 0}, {MinPriority, 2}, {MinPriority - 7, 3},
	}
	for i := 1; i < len(order); i++ {
		a := queueKey(order[i-1].prio, order[i-1].seq)
		b := queueKey(order[i].prio, order[i].seq)
		if string(a) >= string(b) {
			t.Errorf("key(%d,%d)=%x not before key(%d,%d)=%x", order[i-1].prio, order[i-1].seq, a, order[i].prio, order[i].seq, b)
		}
	}
	if k := queueKey(MaxPriority, 1); k[0] != 0 || len(k) != 9 {
		t.Errorf("queueKey(max, 1) = %x", k)
	}
	if k := queueKey(MinPriority, 1); k[0] != 200 {
		t.Errorf("queueKey(min, 1) = %x", k)
	}
}

func TestStore_Enqueue(t *testing.T) {
	t.Parallel()

	t.Run("SetsFields", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
		in := Job{
			ID: "job1", Model: "m", Type: "diffusion", Prompt: "a cat", Params: json.RawMessage(`{"steps": 4}`),
			Priority: 1000, State: JobStateCompleted, Attempts: 7, Error: "old", Seq: 99,
			CreatedAt: created, StartedAt: created, FinishedAt: created,
		}
		if err := tb.s.Enqueue(context.Background(), &in); err != nil {
			t.Fatal(err)
		}
		want := Job{
			ID: "job1", Model: "m", Type: "diffusion", Prompt: "a cat", Params: json.RawMessage(`{"steps": 4}`),
			Priority: MaxPriority, State: JobStateQueued, MaxAttempts: DefaultMaxAttempts, Seq: 1,
			CreatedAt: created.UTC(),
		}
		if !jobsEqual(in, want) {
			t.Fatalf("after enqueue:\n got %+v\nwant %+v", in, want)
		}
		got := tb.get(t, "job1")
		want.Params = json.RawMessage(`{"steps":4}`) // stored compacted
		if !jobsEqual(got, want) {
			t.Fatalf("get:\n got %+v\nwant %+v", got, want)
		}

		second := Job{ID: "job2", Model: "m", Priority: -1000, MaxAttempts: 5}
		if err := tb.s.Enqueue(context.Background(), &second); err != nil {
			t.Fatal(err)
		}
		if second.Seq != 2 || second.Priority != MinPriority || second.MaxAttempts != 5 || !second.CreatedAt.Equal(tb.clock.Now()) {
			t.Fatalf("second job: %+v", second)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tests := map[string]Job{
			"EmptyID":        {Model: "m"},
			"UpperID":        {ID: "ABC", Model: "m"},
			"PathID":         {ID: "../x", Model: "m"},
			"LongID":         {ID: strings.Repeat("a", MaxIDLen+1), Model: "m"},
			"EmptyModel":     {ID: "a"},
			"LongModel":      {ID: "a", Model: strings.Repeat("m", MaxModelLen+1)},
			"BadUTF8Model":   {ID: "a", Model: "\xff"},
			"NegMaxAttempts": {ID: "a", Model: "m", MaxAttempts: -1},
			"BadParams":      {ID: "a", Model: "m", Params: json.RawMessage(`{"a":`)},
		}
		for name, j := range tests {
			t.Run(name, func(t *testing.T) {
				before := j
				err := tb.s.Enqueue(context.Background(), &j)
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				if !jobsEqual(j, before) {
					t.Fatalf("job changed on error: %+v", j)
				}
			})
		}
		if d, _ := tb.s.Depths(); len(d) != 0 {
			t.Fatalf("depths %v after invalid enqueues", d)
		}
	})

	t.Run("DuplicateID", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		first := tb.enqueue(t, "m", 0)
		dup := Job{ID: first.ID, Model: "other", Prompt: "x"}
		if err := tb.s.Enqueue(context.Background(), &dup); !errors.Is(err, ErrStateConflict) {
			t.Fatalf("err = %v, want ErrStateConflict", err)
		}
		// Also once the first is final.
		tb.claim(t, "m")
		if err := tb.s.Complete(first.ID, nil); err != nil {
			t.Fatal(err)
		}
		if err := tb.s.Enqueue(context.Background(), &dup); !errors.Is(err, ErrStateConflict) {
			t.Fatalf("err = %v, want ErrStateConflict", err)
		}
		if got := tb.get(t, first.ID); got.Model != "m" || got.State != JobStateCompleted {
			t.Fatalf("original overwritten: %+v", got)
		}
	})

	t.Run("ContextDone", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		j := Job{ID: "a", Model: "m"}
		if err := tb.s.Enqueue(ctx, &j); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if _, err := tb.s.Get("a"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after cancelled enqueue: %v", err)
		}
	})

	t.Run("MaxQueued", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, func(o *Options) { o.MaxQueued = 3 })
		a := tb.enqueue(t, "m1", 0)
		tb.enqueue(t, "m2", 0)
		tb.enqueue(t, "m3", 0)
		j := Job{ID: "full", Model: "m1"}
		if err := tb.s.Enqueue(context.Background(), &j); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("err = %v, want ErrQueueFull", err)
		}
		// Claiming frees a place; the running job may come back even when full.
		tb.claim(t, "m1")
		if err := tb.s.Enqueue(context.Background(), &j); err != nil {
			t.Fatal(err)
		}
		if st, err := tb.s.Requeue(a.ID, "engine crashed"); err != nil || st != JobStateQueued {
			t.Fatalf("requeue when full: %s, %v", st, err)
		}
		if d, _ := tb.s.Depths(); d["m1"] != 2 {
			t.Fatalf("depths %v", d)
		}
		if err := tb.s.Enqueue(context.Background(), &Job{ID: "over", Model: "m9"}); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("err = %v, want ErrQueueFull", err)
		}
	})
}

// jobsEqual compares jobs, times with Equal.
func jobsEqual(a, b Job) bool {
	return a.ID == b.ID && a.Model == b.Model && a.Type == b.Type && a.Prompt == b.Prompt &&
		string(a.Params) == string(b.Params) && a.Priority == b.Priority && a.State == b.State &&
		a.Attempts == b.Attempts && a.MaxAttempts == b.MaxAttempts && a.Error == b.Error && a.Seq == b.Seq &&
		a.CreatedAt.Equal(b.CreatedAt) && a.StartedAt.Equal(b.StartedAt) && a.FinishedAt.Equal(b.FinishedAt)
}

// makeJob brings a fresh job of model "m" into state st.
func (tb *testBundle) makeJob(t *testing.T, st JobState) Job {
	t.Helper()
	j := tb.enqueue(t, "m", 0)
	if st == JobStateQueued {
		return j
	}
	if c := tb.claim(t, "m"); c.ID != j.ID {
		t.Fatalf("claimed %s, want %s", c.ID, j.ID)
	}
	var err error
	switch st {
	case JobStateCompleted:
		err = tb.s.Complete(j.ID, []byte("out"))
	case JobStateFailed:
		err = tb.s.Fail(j.ID, "boom")
	case JobStateCancelled:
		_, err = tb.s.Cancel(j.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tb.get(t, j.ID)
}

func TestStore_Transitions(t *testing.T) {
	t.Parallel()
	type op struct {
		name string
		from []JobState // states it accepts
		to   JobState
		do   func(s *Store, id string) (JobState, error) // returns the state it reports, if any
	}
	ops := []op{
		{"Complete", []JobState{JobStateRunning}, JobStateCompleted, func(s *Store, id string) (JobState, error) {
			return "", s.Complete(id, []byte("result"))
		}},
		{"Fail", []JobState{JobStateQueued, JobStateRunning}, JobStateFailed, func(s *Store, id string) (JobState, error) {
			return "", s.Fail(id, "bad input")
		}},
		{"Requeue", []JobState{JobStateRunning}, JobStateQueued, func(s *Store, id string) (JobState, error) {
			return s.Requeue(id, "engine exited")
		}},
		{"Release", []JobState{JobStateRunning}, JobStateQueued, func(s *Store, id string) (JobState, error) {
			return "", s.Release(id)
		}},
		{"Cancel", []JobState{JobStateQueued, JobStateRunning}, JobStateCancelled, func(s *Store, id string) (JobState, error) {
			return s.Cancel(id)
		}},
	}
	for _, o := range ops {
		for _, from := range JobStates() {
			allowed := slices.Contains(o.from, from)
			t.Run(o.name+"/"+string(from), func(t *testing.T) {
				t.Parallel()
				tb := setup(t)
				j := tb.makeJob(t, from)
				other := tb.enqueue(t, "m", 0) // a later arrival that must not be touched
				tb.clock.Advance(time.Minute)
				reported, err := o.do(tb.s, j.ID)
				got := tb.get(t, j.ID)
				tb.check(t)
				if n := tb.get(t, other.ID); !jobsEqual(n, other) {
					t.Fatalf("neighbour changed: %+v", n)
				}
				if !allowed {
					if !errors.Is(err, ErrStateConflict) {
						t.Fatalf("err = %v, want ErrStateConflict", err)
					}
					if !jobsEqual(got, j) {
						t.Fatalf("job changed by refused %s:\n got %+v\nwant %+v", o.name, got, j)
					}
					if o.name == "Cancel" && reported != from {
						t.Fatalf("cancel reported %q, want current state %q", reported, from)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s from %s: %v", o.name, from, err)
				}
				if got.State != o.to {
					t.Fatalf("state %s, want %s", got.State, o.to)
				}
				switch o.name {
				case "Cancel":
					if reported != from {
						t.Fatalf("cancel reported %q, want previous %q", reported, from)
					}
				case "Requeue":
					if reported != JobStateQueued {
						t.Fatalf("requeue reported %q", reported)
					}
				}
				if o.to.Final() != !got.FinishedAt.IsZero() || (o.to.Final() && !got.FinishedAt.Equal(tb.clock.Now())) {
					t.Fatalf("finished_at %v for %s", got.FinishedAt, got.State)
				}
				wantAttempts := j.Attempts
				if o.name == "Release" {
					wantAttempts--
				}
				if got.Attempts != wantAttempts {
					t.Fatalf("attempts %d, want %d", got.Attempts, wantAttempts)
				}
				res, rerr := tb.s.Result(j.ID)
				if (o.to == JobStateCompleted) != (rerr == nil) {
					t.Fatalf("result %q, %v", res, rerr)
				}
				if o.to == JobStateCompleted && string(res) != "result" {
					t.Fatalf("result %q", res)
				}
				pos, perr := tb.s.Position(j.ID)
				if o.to == JobStateQueued {
					// Back at its original place: ahead of the later arrival.
					if perr != nil || pos != 0 || !got.StartedAt.IsZero() {
						t.Fatalf("position %d, %v; started_at %v", pos, perr, got.StartedAt)
					}
				} else if !errors.Is(perr, ErrStateConflict) {
					t.Fatalf("position of %s job: %v", got.State, perr)
				}
			})
		}
		t.Run(o.name+"/NotFound", func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			for _, id := range []string{"nosuchjob", "", "../x"} {
				if _, err := o.do(tb.s, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s(%q): %v, want ErrNotFound", o.name, id, err)
				}
			}
		})
	}
}

func TestStore_Claim(t *testing.T) {
	t.Parallel()

	t.Run("PriorityThenFIFO", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		prios := []int{0, 5, 0, -3, 5, 200, 0, -300, 5}
		byPrio := map[int][]string{}
		for _, p := range prios {
			j := tb.enqueue(t, "m", p)
			byPrio[j.Priority] = append(byPrio[j.Priority], j.ID)
		}
		var want []string
		for _, p := range []int{MaxPriority, 5, 0, -3, MinPriority} {
			want = append(want, byPrio[p]...)
		}
		var got []string
		for range prios {
			j := tb.claim(t, "m")
			if j.State != JobStateRunning || j.Attempts != 1 || !j.StartedAt.Equal(tb.clock.Now()) {
				t.Fatalf("claimed %+v", j)
			}
			got = append(got, j.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("claim order\n got %v\nwant %v", got, want)
		}
		if _, err := tb.s.Claim("m"); !errors.Is(err, ErrEmpty) {
			t.Fatalf("claim on empty queue: %v", err)
		}
	})

	t.Run("PerModel", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		a1 := tb.enqueue(t, "a", 0)
		b1 := tb.enqueue(t, "b", 50)
		a2 := tb.enqueue(t, "a", 0)
		for _, tc := range []struct{ model, want string }{{"b", b1.ID}, {"a", a1.ID}, {"a", a2.ID}} {
			if j := tb.claim(t, tc.model); j.ID != tc.want || j.Model != tc.model {
				t.Fatalf("claim %s got %s (%s), want %s", tc.model, j.ID, j.Model, tc.want)
			}
		}
		for _, m := range []string{"a", "b", "c", ""} {
			if _, err := tb.s.Claim(m); !errors.Is(err, ErrEmpty) {
				t.Fatalf("claim %q: %v, want ErrEmpty", m, err)
			}
		}
	})

	t.Run("CancelledQueuedIsSkipped", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		a := tb.enqueue(t, "m", 0)
		b := tb.enqueue(t, "m", 0)
		if _, err := tb.s.Cancel(a.ID); err != nil {
			t.Fatal(err)
		}
		if j := tb.claim(t, "m"); j.ID != b.ID {
			t.Fatalf("claimed %s, want %s", j.ID, b.ID)
		}
	})
}

func TestStore_Retry(t *testing.T) {
	t.Parallel()

	t.Run("RequeueKeepsPositionUntilExhausted", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		j := Job{ID: "first", Model: "m", MaxAttempts: 2}
		if err := tb.s.Enqueue(context.Background(), &j); err != nil {
			t.Fatal(err)
		}
		later := tb.enqueue(t, "m", 0)
		tb.claim(t, "m")
		if st, err := tb.s.Requeue("first", "engine crashed"); err != nil || st != JobStateQueued {
			t.Fatalf("requeue 1: %s, %v", st, err)
		}
		if pos, err := tb.s.Position("first"); err != nil || pos != 0 {
			t.Fatalf("position after requeue: %d, %v", pos, err)
		}
		if pos, _ := tb.s.Position(later.ID); pos != 1 {
			t.Fatalf("later job at %d", pos)
		}
		got := tb.claim(t, "m")
		if got.ID != "first" || got.Attempts != 2 || got.Error != "engine crashed" {
			t.Fatalf("second claim: %+v", got)
		}
		if st, err := tb.s.Requeue("first", "engine crashed again"); err != nil || st != JobStateFailed {
			t.Fatalf("requeue 2: %s, %v", st, err)
		}
		got = tb.get(t, "first")
		if got.State != JobStateFailed || got.Error != "engine crashed again" || got.FinishedAt.IsZero() {
			t.Fatalf("after attempts ran out: %+v", got)
		}
	})

	t.Run("ReleaseDoesNotCount", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		j := Job{ID: "only", Model: "m", MaxAttempts: 1}
		if err := tb.s.Enqueue(context.Background(), &j); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			tb.claim(t, "m")
			if err := tb.s.Release("only"); err != nil {
				t.Fatal(err)
			}
		}
		if got := tb.get(t, "only"); got.State != JobStateQueued || got.Attempts != 0 {
			t.Fatalf("after releases: %+v", got)
		}
	})

	t.Run("CompleteAfterCancel", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		j := tb.makeJob(t, JobStateRunning)
		if prev, err := tb.s.Cancel(j.ID); err != nil || prev != JobStateRunning {
			t.Fatalf("cancel: %s, %v", prev, err)
		}
		if err := tb.s.Complete(j.ID, []byte("late")); !errors.Is(err, ErrStateConflict) {
			t.Fatalf("complete after cancel: %v", err)
		}
		if _, err := tb.s.Result(j.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("result after refused complete: %v", err)
		}
	})
}

func TestStore_QueueViews(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	if d, err := tb.s.Depths(); err != nil || len(d) != 0 {
		t.Fatalf("depths of empty store: %v, %v", d, err)
	}
	if h, err := tb.s.Heads(); err != nil || len(h) != 0 {
		t.Fatalf("heads of empty store: %v, %v", h, err)
	}
	a0 := tb.enqueue(t, "a", 0)
	a1 := tb.enqueue(t, "a", 0)
	a2 := tb.enqueue(t, "a", 10)
	b0 := tb.enqueue(t, "b", -5)
	running := tb.enqueue(t, "c", 0)
	tb.claim(t, "c")

	d, err := tb.s.Depths()
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 2 || d["a"] != 3 || d["b"] != 1 {
		t.Fatalf("depths %v", d)
	}
	h, err := tb.s.Heads()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h["a"].ID != a2.ID || h["b"].ID != b0.ID {
		t.Fatalf("heads %v", h)
	}
	for id, want := range map[string]int{a2.ID: 0, a0.ID: 1, a1.ID: 2, b0.ID: 0} {
		if pos, err := tb.s.Position(id); err != nil || pos != want {
			t.Errorf("position %s: %d, %v; want %d", id, pos, err, want)
		}
	}
	if _, err := tb.s.Position(running.ID); !errors.Is(err, ErrStateConflict) {
		t.Errorf("position of running job: %v", err)
	}
	if _, err := tb.s.Position("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("position of unknown job: %v", err)
	}
	if err := tb.s.Fail(a2.ID, "bad"); err != nil {
		t.Fatal(err)
	}
	if pos, _ := tb.s.Position(a1.ID); pos != 1 {
		t.Errorf("position after the head failed: %d", pos)
	}
	if r, err := tb.s.Running(); err != nil || !slices.Equal(ids(r), []string{running.ID}) {
		t.Errorf("running: %v, %v", ids(r), err)
	}
}

func TestStore_List(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	var all []Job // oldest first
	for i := range 10 {
		all = append(all, tb.enqueue(t, []string{"a", "b"}[i%2], i%3))
	}
	r1 := tb.claim(t, "a") // highest priority of a: all[4] (prio 1)... whatever Claim picks
	r2 := tb.claim(t, "b")
	if err := tb.s.Complete(r2.ID, nil); err != nil {
		t.Fatal(err)
	}
	newest := slices.Clone(all)
	slices.Reverse(newest)
	cur := func(id string) Job { return tb.get(t, id) }
	filter := func(keep func(Job) bool) []string {
		var out []string
		for _, j := range newest {
			if keep(cur(j.ID)) {
				out = append(out, j.ID)
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    ListFilter
		want []string
	}{
		{"All", ListFilter{}, ids(newest)},
		{"Limit", ListFilter{Limit: 3}, ids(newest[:3])},
		{"Model", ListFilter{Model: "a"}, filter(func(j Job) bool { return j.Model == "a" })},
		{"ModelLimit", ListFilter{Model: "b", Limit: 2}, filter(func(j Job) bool { return j.Model == "b" })[:2]},
		{"Queued", ListFilter{State: JobStateQueued}, filter(func(j Job) bool { return j.State == JobStateQueued })},
		{"QueuedModel", ListFilter{State: JobStateQueued, Model: "b", Limit: 3}, filter(func(j Job) bool { return j.State == JobStateQueued && j.Model == "b" })[:3]},
		{"Running", ListFilter{State: JobStateRunning}, []string{r1.ID}},
		{"Completed", ListFilter{State: JobStateCompleted}, []string{r2.ID}},
		{"Cancelled", ListFilter{State: JobStateCancelled}, nil},
		{"Before", ListFilter{BeforeSeq: all[4].Seq}, ids(newest[6:])},
		{"BeforeLimit", ListFilter{BeforeSeq: all[4].Seq, Limit: 2}, ids(newest[6:8])},
		{"BeforeBeyond", ListFilter{BeforeSeq: 1000, Limit: 1}, ids(newest[:1])},
		{"BeforeFirst", ListFilter{BeforeSeq: all[0].Seq}, nil},
		{"UnknownModel", ListFilter{Model: "zzz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tb.s.List(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Fatalf("List(%+v)\n got %v\nwant %v", tt.f, ids(got), tt.want)
			}
		})
	}
	if _, err := tb.s.List(ListFilter{State: "done"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown state: %v", err)
	}
}

func TestStore_Result(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a := tb.makeJob(t, JobStateRunning)
	if err := tb.s.Complete(a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if res, err := tb.s.Result(a.ID); err != nil || res == nil || len(res) != 0 {
		t.Fatalf("empty result: %q (nil %t), %v", res, res == nil, err)
	}
	b := tb.makeJob(t, JobStateRunning)
	payload := []byte("an image")
	if err := tb.s.Complete(b.ID, payload); err != nil {
		t.Fatal(err)
	}
	payload[0] = 'X' // the store kept its own copy
	res, err := tb.s.Result(b.ID)
	if err != nil || string(res) != "an image" {
		t.Fatalf("result %q, %v", res, err)
	}
	res[0] = 'Y' // and hands out copies
	if again, _ := tb.s.Result(b.ID); string(again) != "an image" {
		t.Fatalf("result changed to %q", again)
	}
	for _, id := range []string{"nosuch", tb.enqueue(t, "m", 0).ID, b.ID + "x", b.ID[:5]} {
		if _, err := tb.s.Result(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("result %s: %v", id, err)
		}
	}
}

func TestStore_Cleanup(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	old := []Job{tb.makeJob(t, JobStateCompleted), tb.makeJob(t, JobStateFailed), tb.makeJob(t, JobStateCancelled)}
	oldQueued := tb.enqueue(t, "other", 0)
	oldRunning := tb.makeJob(t, JobStateRunning)
	tb.clock.Advance(time.Hour)
	cutoff := tb.clock.Now()
	recent := tb.makeJob(t, JobStateCompleted)

	n, err := tb.s.Cleanup(cutoff)
	if err != nil || n != len(old) {
		t.Fatalf("cleanup: %d, %v; want %d", n, err, len(old))
	}
	for _, j := range old {
		if _, err := tb.s.Get(j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("get %s after cleanup: %v", j.ID, err)
		}
		if _, err := tb.s.Result(j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("result %s after cleanup: %v", j.ID, err)
		}
	}
	for _, id := range []string{oldQueued.ID, oldRunning.ID, recent.ID} {
		tb.get(t, id)
	}
	if res, err := tb.s.Result(recent.ID); err != nil || string(res) != "out" {
		t.Errorf("recent result: %q, %v", res, err)
	}
	if got, _ := tb.s.List(ListFilter{}); len(got) != 3 {
		t.Errorf("list after cleanup: %v", ids(got))
	}
	if n, err := tb.s.Cleanup(cutoff); err != nil || n != 0 {
		t.Fatalf("second cleanup: %d, %v", n, err)
	}
	tb.clock.Advance(time.Hour)
	if n, err := tb.s.Cleanup(tb.clock.Now()); err != nil || n != 1 {
		t.Fatalf("cleanup of the recent job: %d, %v", n, err)
	}
	tb.check(t)
}

func TestStore_LearnedVRAM(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	if got, err := tb.s.LearnedVRAM(); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, kv := range []struct {
		m  string
		mb int
	}{{"llama", 6000}, {"sd", 8192}, {"llama", 6144}} {
		if err := tb.s.SetLearnedVRAM(kv.m, kv.mb); err != nil {
			t.Fatal(err)
		}
	}
	got, err := tb.s.LearnedVRAM()
	if err != nil || len(got) != 2 || got["llama"] != 6144 || got["sd"] != 8192 {
		t.Fatalf("learned %v, %v", got, err)
	}
	for _, bad := range []struct {
		m  string
		mb int
	}{{"", 1}, {"x", -1}} {
		if err := tb.s.SetLearnedVRAM(bad.m, bad.mb); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetLearnedVRAM(%q, %d): %v", bad.m, bad.mb, err)
		}
	}
}

func TestStore_Close(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	j := tb.makeJob(t, JobStateRunning)
	if err := tb.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	calls := map[string]func() error{
		"Enqueue":        func() error { return tb.s.Enqueue(context.Background(), &Job{ID: "x", Model: "m"}) },
		"Claim":          func() error { _, err := tb.s.Claim("m"); return err },
		"Complete":       func() error { return tb.s.Complete(j.ID, nil) },
		"Fail":           func() error { return tb.s.Fail(j.ID, "") },
		"Requeue":        func() error { _, err := tb.s.Requeue(j.ID, ""); return err },
		"Release":        func() error { return tb.s.Release(j.ID) },
		"Cancel":         func() error { _, err := tb.s.Cancel(j.ID); return err },
		"Get":            func() error { _, err := tb.s.Get(j.ID); return err },
		"Result":         func() error { _, err := tb.s.Result(j.ID); return err },
		"Depths":         func() error { _, err := tb.s.Depths(); return err },
		"Heads":          func() error { _, err := tb.s.Heads(); return err },
		"Position":       func() error { _, err := tb.s.Position(j.ID); return err },
		"List":           func() error { _, err := tb.s.List(ListFilter{}); return err },
		"Running":        func() error { _, err := tb.s.Running(); return err },
		"Cleanup":        func() error { _, err := tb.s.Cleanup(time.Now()); return err },
		"SetLearnedVRAM": func() error { return tb.s.SetLearnedVRAM("m", 1) },
		"LearnedVRAM":    func() error { _, err := tb.s.LearnedVRAM(); return err },
		"Check":          func() error { return tb.s.Check() },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
}

func TestOpen_Locked(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	start := time.Now()
	_, err := Open(tb.path, Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %s", d)
	}
}

func TestOpen_Invalid(t *testing.T) {
	t.Parallel()
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{MaxQueued: -1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative MaxQueued: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(file, "x.db"), Options{}); err == nil {
		t.Fatal("open below a regular file succeeded")
	}
	if _, err := Open(file, Options{}); err == nil {
		t.Fatal("open of a non-bbolt file succeeded")
	}
}

func TestReadLearnedVRAM(t *testing.T) {
	path := t.TempDir() + "/q.db"
	if got, err := ReadLearnedVRAM(path, 100*time.Millisecond); err != nil || len(got) != 0 {
		t.Fatalf("missing file: %v, %v", got, err)
	}
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLearnedVRAM("a@1", 5120); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLearnedVRAM(path, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("while open: err = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLearnedVRAM(path, 100*time.Millisecond)
	if err != nil || got["a@1"] != 5120 {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestClaim_AgingLetsOldLowPriorityJobsThrough(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(t.TempDir()+"/q.db", Options{NoSync: true, Aging: time.Minute, NowFunc: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enq := func(prio int) string {
		j := &Job{ID: NewID(), Model: "m", Type: "llm", Prompt: "p", Priority: prio}
		if err := s.Enqueue(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	low := enq(0)
	now = now.Add(90 * time.Second)
	high := enq(2)
	// low has waited 1.5 aging steps: effective 1 < 2.
	if j, err := s.Claim("m"); err != nil || j.ID != high {
		t.Fatalf("claimed %s, %v; want the high-priority job", j.ID, err)
	}
	high2 := enq(2)
	now = now.Add(3 * time.Minute) // low: 0+4.5 → 4; high2: 2+3 → 5
	if h, _ := s.Heads(); h["m"].ID != high2 {
		t.Fatalf("head %s, want high2", h["m"].ID)
	}
	now = now.Add(10 * time.Minute) // low: 14; high2: 15 — still ahead
	high3 := enq(5)                 // fresh: 5
	if j, _ := s.Claim("m"); j.ID != high2 {
		t.Fatalf("claimed %s, want high2", j.ID)
	}
	// low (effective 14) now beats the fresh high3 (5).
	if j, _ := s.Claim("m"); j.ID != low {
		t.Fatalf("claimed %s, want the aged low-priority job", j.ID)
	}
	if j, _ := s.Claim("m"); j.ID != high3 {
		t.Fatalf("claimed %s, want high3", j.ID)
	}
	if _, err := s.Claim("m"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("queue not empty: %v", err)
	}
}
