package scheduler

import (
	"github.com/vramcram/vramcram/engine"

	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// Requests waiting for a slot count against MaxQueue together with queued
// jobs, over all models: past it Acquire answers store.ErrQueueFull at once
// instead of waiting without bound.
func TestAcquire_WaitersCountAgainstMaxQueue(t *testing.T) {
	sizes := map[string]int{"a": 4000, "b": 4000}
	release := make(chan struct{})
	var once sync.Once
	finish := func() { once.Do(func() { close(release) }) }
	defer finish() // on a failure too: the running job must end for the scheduler to stop
	b := setup(t, Config{Models: models(sizes, 1), MaxQueue: 3}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			<-release
			return []byte(`{"type":"llm","text":"x"}`), nil
		}
	})
	running := b.submit("a", "busy", 0)
	b.until("job running", func(s Snapshot) bool { return s.Running == 1 })
	queued := b.submit("a", "queued", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			l, err := b.sched.Acquire(ctx, "a", 0)
			if l != nil {
				l.Release()
			}
			errs <- err
		}()
	}
	b.until("one job and two requests waiting", func(s Snapshot) bool { return queuedOf(s, "a") == 3 })
	for _, m := range []string{"a", "b"} { // the line is shared by every model
		// The answer comes at once; the timeout only keeps a regression
		// (waiting in line) from hanging the test.
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := b.sched.Acquire(fctx, m, 0)
		fcancel()
		if l != nil {
			l.Release()
		}
		if !errors.Is(err, store.ErrQueueFull) {
			t.Fatalf("fourth in line for %s: %v, want ErrQueueFull", m, err)
		}
	}
	// Jobs see the same line.
	if err := b.sched.Admit(context.Background(), "b"); !errors.Is(err, store.ErrQueueFull) {
		t.Fatalf("a job with the line full: %v, want ErrQueueFull", err)
	}
	cancel() // the two waiters leave: there is room again
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter: %v", err)
		}
	}
	b.until("waiters gone", func(s Snapshot) bool { return queuedOf(s, "a") == 1 })
	if err := b.sched.Admit(context.Background(), "b"); err != nil {
		t.Fatalf("a job with room in line: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := b.sched.Acquire(context.Background(), "a", 0)
		if l != nil {
			l.Release()
		}
		got <- err
	}()
	b.until("a request waits again", func(s Snapshot) bool { return queuedOf(s, "a") == 2 })
	finish()
	if err := <-got; err != nil {
		t.Fatalf("request with room in line: %v", err)
	}
	b.wait(running, store.JobStateCompleted)
	b.wait(queued, store.JobStateCompleted)
}

func queuedOf(s Snapshot, model string) int {
	for _, m := range s.Models {
		if m.Name == model {
			return m.Queued
		}
	}
	return -1
}
