package scheduler

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

func TestAcquire_LoadsModelAndHandsOutURL(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, nil)
	sub := b.sched.Bus().Subscribe(16)
	defer sub.Close()
	l, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.URL != "http://fake.invalid/a" || l.Model != "a" || l.ID == "" {
		t.Fatalf("lease = %+v", l)
	}
	snap := b.until("lease counted as running", func(s Snapshot) bool { return s.Running == 1 })
	if stateOf(snap, "a") != ModelBusy {
		t.Fatalf("state = %s, want busy", stateOf(snap, "a"))
	}
	l.Release()
	l.Release() // idempotent
	b.until("slot back", func(s Snapshot) bool { return s.Running == 0 && stateOf(s, "a") == ModelReady })
	var started, finished bool
	for !finished {
		select {
		case ev := <-sub.C:
			if ev.JobID != l.ID {
				continue
			}
			started = started || ev.Type == EvJobStarted
			if ev.Type == EvJobFinished {
				finished = true
				if ev.State != "completed" {
					t.Fatalf("finished state %q", ev.State)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no job_finished event for the lease")
		}
	}
	if !started {
		t.Fatal("no job_started event for the lease")
	}
}

func TestAcquire_WaitsForAFreeSlot(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, nil)
	first, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lease, 1)
	go func() {
		l, err := b.sched.Acquire(context.Background(), "a", 0)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	b.until("second request waiting", func(s Snapshot) bool { return s.Models[0].Queued == 1 })
	select {
	case <-got:
		t.Fatal("second lease granted while the only slot was taken")
	case <-time.After(50 * time.Millisecond):
	}
	first.Finish(context.Canceled)
	second := <-got
	if second == nil {
		t.Fatal("no second lease")
	}
	second.Release()
}

func TestAcquire_AbandonedWaiterLeavesNoTrace(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, nil)
	first, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := b.sched.Acquire(ctx, "a", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	b.until("waiter gone", func(s Snapshot) bool { return s.Models[0].Queued == 0 })
	first.Release()
	b.until("idle", func(s Snapshot) bool { return s.Running == 0 })
}

func TestAcquire_SwapsModelsUnderTheBudget(t *testing.T) {
	sizes := map[string]int{"a": 6000, "b": 6000}
	b := setup(t, Config{Models: models(sizes, 1), TotalMB: 10000}, sizes, nil)
	la, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	la.Release()
	lb, err := b.sched.Acquire(context.Background(), "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Release()
	snap := b.until("a evicted", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnloaded })
	if snap.ReservedMB > snap.BudgetMB {
		t.Fatalf("reserved %d > budget %d", snap.ReservedMB, snap.BudgetMB)
	}
}

func TestAcquire_HigherPriorityBeforeQueuedJobs(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	release := make(chan struct{})
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			<-release
			return []byte(`{"type":"llm","text":"x"}`), nil
		}
	})
	first := b.submit("a", "busy", 0)
	b.until("first job running", func(s Snapshot) bool { return s.Running == 1 })
	second := b.submit("a", "queued", 0)
	got := make(chan *Lease, 1)
	go func() {
		l, err := b.sched.Acquire(context.Background(), "a", 5)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	b.until("waiter queued", func(s Snapshot) bool { return s.Models[0].Queued == 2 })
	release <- struct{}{} // first job ends: the slot goes to the interactive request
	l := <-got
	if j, _ := b.st.Get(second); j.State != store.JobStateQueued {
		t.Fatalf("queued job state %s, want still queued while the lease holds the slot", j.State)
	}
	l.Release()
	close(release)
	b.wait(first, store.JobStateCompleted)
	b.wait(second, store.JobStateCompleted)
}

func TestAcquire_Errors(t *testing.T) {
	sizes := map[string]int{"a": 4000, "huge": 20000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, func(l *fakeLauncher) {
		l.failLoad["a"] = errors.New("bad model file")
	})
	if _, err := b.sched.Acquire(context.Background(), "nope", 0); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := b.sched.Acquire(context.Background(), "huge", 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.sched.Acquire(ctx, "a", 0); !errors.Is(err, ErrLoadFailed) {
		t.Fatalf("load failure: %v", err)
	}
}

func TestAcquire_ShutdownAnswersWaitersAndEndsLeases(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1), ShutdownGrace: 50 * time.Millisecond}, sizes, nil)
	l, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		_, err := b.sched.Acquire(context.Background(), "a", 0)
		waitErr <- err
	}()
	b.until("waiter queued", func(s Snapshot) bool { return s.Models[0].Queued == 1 })
	go func() {
		<-l.Context().Done() // the proxied request ends when the lease's context does
		l.Finish(context.Cause(l.Context()))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.sched.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, ErrStopped) {
		t.Fatalf("waiter got %v, want ErrStopped", err)
	}
}

func TestAcquire_CancelledBeforeAdmissionLeaksNoSlot(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1)}, sizes, nil)
	first, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		if _, err := b.sched.Acquire(done, "a", 0); err == nil {
			t.Fatal("a cancelled request got a lease")
		}
	}
	first.Release()
	b.until("slot back and nobody waiting", func(s Snapshot) bool { return s.Running == 0 && s.Models[0].Queued == 0 })
}

func TestAcquire_AgingAmongWaiters(t *testing.T) {
	sizes := map[string]int{"a": 4000}
	b := setup(t, Config{Models: models(sizes, 1), Aging: 20 * time.Millisecond}, sizes, nil)
	first, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 2)
	wait := func(prio int) {
		l, err := b.sched.Acquire(context.Background(), "a", prio)
		if err != nil {
			t.Error(err)
			return
		}
		got <- prio
		l.Release()
	}
	go wait(0)
	b.until("old low-priority waiter", func(s Snapshot) bool { return s.Models[0].Queued == 1 })
	time.Sleep(300 * time.Millisecond) // 0 + 15 aging steps
	go wait(5)
	b.until("both waiting", func(s Snapshot) bool { return s.Models[0].Queued == 2 })
	first.Release()
	if p := <-got; p != 0 {
		t.Fatalf("priority %d served first; the aged priority-0 waiter should be", p)
	}
	<-got
}

func TestAcquire_KeepAliveOverridesTTL(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 1000, "b": 1000}
	ms := models(sizes, 1)
	b := setup(t, Config{Models: ms}, sizes, nil)
	// a has no TTL: keep_alive 0 unloads it as soon as the lease is done.
	l, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.SetKeepAlive(0)
	l.Release()
	b.until("a unloaded after keep_alive 0", func(s Snapshot) bool { return stateOf(s, "a") == ModelUnloaded })
	// b: a keep-alive of 50ms in place of no TTL.
	l, err = b.sched.Acquire(context.Background(), "b", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.SetKeepAlive(50 * time.Millisecond)
	l.Release()
	b.until("b unloaded after its keep_alive", func(s Snapshot) bool { return stateOf(s, "b") == ModelUnloaded })
	if got := b.l.stopped(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("stopped = %v", got)
	}
}
