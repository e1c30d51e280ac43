package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStore_Concurrent enqueues from 64 goroutines while 8 workers claim and
// complete and readers look on: no job is claimed twice, every job completes.
func TestStore_Concurrent(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const (
		submitters = 64
		perSub     = 40
		total      = submitters * perSub
		workers    = 8
	)
	models := []string{"a", "b", "c", "d"}
	var claimed sync.Map
	var done atomic.Int64
	stop := make(chan struct{})

	var subs sync.WaitGroup
	for i := range submitters {
		subs.Go(func() {
			for k := range perSub {
				j := Job{ID: fmt.Sprintf("s%d-%d", i, k), Model: models[(i+k)%len(models)], Priority: k % 3}
				if err := tb.s.Enqueue(context.Background(), &j); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}

	var work sync.WaitGroup
	for w := range workers {
		work.Go(func() {
			for n := w; done.Load() < total; n++ {
				select {
				case <-stop:
					return
				default:
				}
				j, err := tb.s.Claim(models[n%len(models)])
				if errors.Is(err, ErrEmpty) {
					time.Sleep(50 * time.Microsecond) // back off, not a synchronisation
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if prev, dup := claimed.LoadOrStore(j.ID, w); dup {
					t.Errorf("job %s claimed by worker %d and %d", j.ID, prev, w)
				}
				if j.Attempts != 1 {
					t.Errorf("job %s attempts %d", j.ID, j.Attempts)
				}
				if err := tb.s.Complete(j.ID, []byte(j.ID)); err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}

	var readers sync.WaitGroup
	var checks atomic.Int64
	for r := range 2 {
		readers.Go(func() {
			for i := 0; done.Load() < total; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := tb.s.Depths(); err != nil {
					t.Error(err)
				}
				if h, err := tb.s.Heads(); err != nil {
					t.Error(err)
				} else {
					for _, j := range h {
						if _, err := tb.s.Position(j.ID); err != nil && !errors.Is(err, ErrStateConflict) {
							t.Error(err)
						}
					}
				}
				if _, err := tb.s.List(ListFilter{Limit: 20}); err != nil {
					t.Error(err)
				}
				if r == 0 && i%20 == 0 { // Check holds up the writers while it walks the file
					checks.Add(1)
					if err := tb.s.Check(); err != nil {
						t.Error(err)
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	subs.Wait()
	finished := make(chan struct{})
	go func() { work.Wait(); readers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(3 * time.Minute):
		close(stop)
		<-finished
		t.Fatalf("only %d of %d jobs completed", done.Load(), total)
	}
	if t.Failed() {
		return
	}
	jobs, err := tb.s.List(ListFilter{State: JobStateCompleted})
	if err != nil || len(jobs) != total {
		t.Fatalf("%d completed jobs listed, %v; want %d", len(jobs), err, total)
	}
	if d, _ := tb.s.Depths(); len(d) != 0 {
		t.Fatalf("depths %v", d)
	}
	for _, j := range jobs[:10] {
		if res, err := tb.s.Result(j.ID); err != nil || string(res) != j.ID {
			t.Fatalf("result of %s: %q, %v", j.ID, res, err)
		}
	}
	t.Logf("%d jobs in %d commits; %d checks meanwhile", total, tb.s.commits.Load(), checks.Load())
}
