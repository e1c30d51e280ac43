package scheduler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

func TestScheduler_Reconfigure(t *testing.T) {
	release := make(chan struct{})
	b := setup(t, Config{Models: models(map[string]int{"a": 1000, "b": 1000}, 1)}, nil, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			if job.Prompt == "hold" {
				<-release
			}
			return []byte(`{"type":"llm","text":"ok"}`), nil
		}
	})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the scheduler stops, even when the test fails early
	ctx := context.Background()
	running := b.submit("a", "hold", 0)
	b.until("a busy", func(s Snapshot) bool { return s.Models[0].State == ModelBusy })
	pidA := func() int { s, _ := b.sched.Snapshot(ctx); return s.Models[0].PID }()
	queuedB := b.submit("b", "hold", 0) // b's slot takes it; a second waits in the queue
	b.until("b busy", func(s Snapshot) bool { return s.Models[1].State == ModelBusy })
	waitingB := b.submit("b", "later", 0)

	// c is added, b removed, a unchanged but its TTL: a keeps running.
	settings := Config{Policy: PolicyFIFO, SafetyMarginMB: 0, MaxAttempts: 3}
	next := models(map[string]int{"a": 1000, "c": 1000}, 1)
	res, err := b.sched.Reconfigure(ctx, Reconfig{Models: next, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Added, []string{"c"}) || !slices.Equal(res.Removed, []string{"b"}) || len(res.Restarted) != 0 {
		t.Fatalf("result %+v", res)
	}
	if err := b.sched.Admit(ctx, "b"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("admit of a removed model: %v", err)
	}
	j := b.wait(waitingB, store.JobStateFailed)
	if !strings.Contains(j.Error, "removed from the config") {
		t.Fatalf("queued job of the removed model failed with %q", j.Error)
	}
	b.wait(b.submit("c", "new", 0), store.JobStateCompleted) // the new model serves beside a and the draining b
	free()
	b.wait(running, store.JobStateCompleted)
	b.wait(queuedB, store.JobStateCompleted) // the removed model's running job finished
	snap := b.until("b forgotten", func(s Snapshot) bool { return len(s.Models) == 2 })
	if snap.Models[0].Name != "a" || snap.Models[0].PID != pidA || snap.Models[1].Name != "c" {
		t.Fatalf("models after the reload %+v; want a (same pid %d) and c", snap.Models, pidA)
	}

	// a changes: it drains and the next job starts a new engine.
	res, err = b.sched.Reconfigure(ctx, Reconfig{Models: next, Restart: []string{"a"}, Settings: settings})
	if err != nil || !slices.Equal(res.Restarted, []string{"a"}) {
		t.Fatalf("restart: %+v %v", res, err)
	}
	b.wait(b.submit("a", "again", 0), store.JobStateCompleted)
	snap = b.until("a restarted", func(s Snapshot) bool { return s.Models[0].PID != 0 && s.Models[0].PID != pidA })

	// An invalid one changes nothing.
	bad := append([]Model(nil), next...)
	bad[1].GPUs = []int{3}
	if _, err := b.sched.Reconfigure(ctx, Reconfig{Models: bad, Settings: settings}); err == nil || !strings.Contains(err.Error(), "GPU 3") {
		t.Fatalf("invalid reconfig: %v", err)
	}
	if _, err := b.sched.Reconfigure(ctx, Reconfig{Models: next[:1], Settings: Config{Policy: "nope"}}); err == nil {
		t.Fatal("unknown policy accepted")
	}
	if s, _ := b.sched.Snapshot(ctx); len(s.Models) != 2 {
		t.Fatalf("a rejected reconfig changed the models: %+v", s.Models)
	}
}
