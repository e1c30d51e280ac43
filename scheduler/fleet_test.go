package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// fakeFleet stands for the other nodes: whether this node may load, and
// which models fit elsewhere.
type fakeFleet struct {
	mu      sync.Mutex
	mayLoad bool
	asked   int
	models  map[string]int // times asked, by model
	fits    map[string]bool
}

func (f *fakeFleet) MayLoad(model string, _ time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if f.models == nil {
		f.models = map[string]int{}
	}
	f.models[model]++
	return f.mayLoad
}

// askedFor is how often the fleet was asked about model.
func (f *fakeFleet) askedFor(model string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.models[model]
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

// The fleet's load claim is taken only for a model this node is about to
// load: while a busy model fills the GPU, queued work for another model
// does not claim it here (the claim kept the other nodes from loading it
// until max_wait, and they sat idle).
func TestScheduler_FleetClaimOnlyWhatFits(t *testing.T) {
	t.Parallel()
	sizes := map[string]int{"a": 6000, "b": 6000}
	fleet := &fakeFleet{mayLoad: true}
	release := make(chan struct{})
	b := setup(t, Config{Models: models(sizes, 1), Fleet: fleet, Policy: PolicyBatch, MaxWait: time.Minute}, sizes, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, _ *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Model == "a" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return []byte(`{"type":"llm","text":"ok"}`), nil
		}
	})
	t.Cleanup(func() { close(release) })
	b.submit("a", "long", 0)
	b.until("a busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	b.submit("b", "waits", 0)
	for range 5 { // several plans while a keeps the GPU busy
		if _, err := b.sched.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := fleet.askedFor("b"); n != 0 {
		t.Fatalf("the fleet was asked %d times to load b, which cannot fit here while a runs", n)
	}
}
