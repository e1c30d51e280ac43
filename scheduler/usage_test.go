package scheduler

import (
	"context"
	"testing"

	"github.com/vramcram/vramcram/engine"
)

// TestScheduler_CountsTokens: a completed job's result and a finished lease
// carry their tokens to the model's figures and the job_finished events.
func TestScheduler_CountsTokens(t *testing.T) {
	b := setup(t, Config{Models: models(map[string]int{"a": 1000}, 1)}, nil, func(l *fakeLauncher) {
		l.runFunc = func(ctx context.Context, e *fakeEngine, job engine.Job) ([]byte, error) {
			return []byte(`{"type":"llm","text":"x","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12},` +
				`"timings":{"prompt_n":5,"predicted_n":7,"predicted_per_second":40}}`), nil
		}
	})
	sub := b.sched.Bus().Subscribe(256)
	defer sub.Close()
	b.wait(b.submit("a", "p", 0), "completed")
	ev := nextFinished(t, sub)
	if ev.PromptTokens != 5 || ev.CompletionTokens != 7 || ev.TokensPerSecond != 40 {
		t.Fatalf("job_finished %+v, want 5 prompt, 7 generated, 40 tokens/s", ev)
	}

	l, err := b.sched.Acquire(context.Background(), "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.SetUsage(Usage{PromptTokens: 3, CompletionTokens: 2, TokensPerSecond: 20})
	l.Release()
	ev = nextFinished(t, sub)
	if ev.JobID != l.ID || ev.PromptTokens != 3 || ev.CompletionTokens != 2 {
		t.Fatalf("lease job_finished %+v, want 3 prompt, 2 generated", ev)
	}
	snap := b.until("tokens counted", func(s Snapshot) bool { return s.Models[0].GeneratedTokens == 9 })
	m := snap.Models[0]
	if m.PromptTokens != 8 || m.TokensPerSecond <= 20 || m.TokensPerSecond >= 40 {
		t.Fatalf("model figures %d prompt, %d generated, %.1f tokens/s; want 8, 9 and a recent speed between 20 and 40",
			m.PromptTokens, m.GeneratedTokens, m.TokensPerSecond)
	}
}

func nextFinished(t *testing.T, sub *Subscription) Event {
	t.Helper()
	for ev := range sub.C {
		if ev.Type == EvJobFinished {
			return ev
		}
	}
	t.Fatal("bus closed")
	return Event{}
}
