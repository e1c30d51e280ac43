package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// A model is removed by a reload while a job runs on it; its engine then
// crashes and the job is requeued (attempt counted) after the removal had
// failed the model's queue: the job is failed too, not left queued until a
// restart.
func TestReconfigure_RemovedModelCrashFailsItsJob(t *testing.T) {
	b := setup(t, Config{Models: models(map[string]int{"a": 1000, "b": 1000}, 1)}, nil, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			select {
			case <-e.done:
				return nil, errors.New("engine gone mid-job")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	})
	ctx := context.Background()
	id := b.submit("a", "hold", 0)
	b.until("a busy", func(s Snapshot) bool { return stateOf(s, "a") == ModelBusy })
	if _, err := b.sched.Reconfigure(ctx, Reconfig{Models: models(map[string]int{"b": 1000}, 1),
		Settings: Config{Policy: PolicyBatch, MaxAttempts: 3}}); err != nil {
		t.Fatal(err)
	}
	b.l.mu.Lock()
	var eng *fakeEngine
	for e := range b.l.alive {
		eng = e
	}
	b.l.mu.Unlock()
	eng.crash()
	deadline := time.Now().Add(4 * time.Second)
	var j store.Job
	for time.Now().Before(deadline) {
		j, _ = b.st.Get(id)
		if j.State.Final() {
			t.Logf("job ended %s: %s", j.State, j.Error)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	snap, _ := b.sched.Snapshot(ctx)
	t.Fatalf("job of the removed model still %s (attempts %d) after 4s; models known: %d", j.State, j.Attempts, len(snap.Models))
}
