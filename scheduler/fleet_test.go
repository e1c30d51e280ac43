package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// fakeFleet stands for the other nodes: whether this node may load, and
// which models fit elsewhere.
type fakeFleet struct {
	mu      sync.Mutex
	mayLoad bool
	asked   int
	fits    map[string]bool
}

func (f *fakeFleet) MayLoad(string, time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return f.mayLoad
}

func (f *fakeFleet) FitsElsewhere(model string) bool { return f.fits[model] }

func (f *fakeFleet) set(may bool) {
	f.mu.Lock()
	f.mayLoad = may
	f.mu.Unlock()
}

func (f *fakeFleet) timesAsked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked
}

// TestScheduler_FleetDefersLoads: queued work for a model another node
// holds does not load it here; once the fleet allows it, it loads and runs.
func TestScheduler_FleetDefersLoads(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 4000}
	fleet := &fakeFleet{}
	b := setup(t, Config{Models: models(sizes, 2), Fleet: fleet}, sizes, nil)
	id := b.submit("a", "p", 0)
	deadline := time.Now().Add(10 * time.Second)
	for fleet.timesAsked() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler never asked the fleet whether to load")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := b.sched.Snapshot(context.Background()); err != nil { // one more plan
		t.Fatal(err)
	}
	if got := b.l.launched(); len(got) != 0 {
		t.Fatalf("loaded %v although another node serves the model", got)
	}
	if j, _ := b.st.Get(id); j.State != store.JobStateQueued {
		t.Fatalf("job %s, want queued", j.State)
	}
	fleet.set(true)
	b.sched.Notify("a")
	b.wait(id, store.JobStateCompleted)
}

// TestScheduler_FleetAcceptsWhatFitsElsewhere: a model too large for this
// node's GPUs is admitted when another node can hold it.
func TestScheduler_FleetAcceptsWhatFitsElsewhere(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"big": 20000}
	fleet := &fakeFleet{fits: map[string]bool{"big": true}}
	b := setup(t, Config{Models: models(sizes, 1), Fleet: fleet}, sizes, nil)
	if err := b.sched.Admit(context.Background(), "big"); err != nil {
		t.Fatalf("admit a model that fits another node: %v", err)
	}
}
