package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// A reload while a load waits for evicted memory: the load goroutine uses
// the release timeout and poll copied when the load was decided, so the
// loop's applySettings races with nothing (-race).
func TestReconfigure_ReloadWhileLoadWaitsForMemory(t *testing.T) {
	sizes := map[string]int{"a": 6000, "b": 6000}
	b := releaseRig(t, 500*time.Millisecond)
	s := b.sched
	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	id := b.submit("b", "y", 0)
	for k := 0; k < 20; k++ {
		time.Sleep(10 * time.Millisecond)
		if _, err := s.Reconfigure(context.Background(), Reconfig{Models: models(sizes, 1),
			Settings: Config{Policy: PolicyFIFO, MaxAttempts: 3, ReleaseTimeout: time.Duration(10+k) * time.Second}}); err != nil {
			t.Fatal(err)
		}
	}
	b.wait(id, store.JobStateCompleted)
}
