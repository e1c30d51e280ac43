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
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := newFakeLauncher(10000, sizes)
	l.releaseDelay = 500 * time.Millisecond
	meter := &fakeMeter{l: l, totalMB: 10000}
	s, err := New(Config{Models: models(sizes, 1), TotalMB: 10000, Policy: PolicyFIFO, ReleasePoll: 10 * time.Millisecond}, st, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	defer s.Stop(context.Background())
	b := &bundle{t: t, st: st, l: l, sched: s}
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
