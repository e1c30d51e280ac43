package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
)

// stubEngine records how runJob used it.
type stubEngine struct {
	ran      bool
	path     string
	body     string
	answer   []byte
	forwards bool
}

func (e *stubEngine) WaitReady(context.Context) error { return nil }
func (e *stubEngine) Done() <-chan struct{}           { return nil }
func (e *stubEngine) Err() error                      { return nil }
func (e *stubEngine) Stop(context.Context) error      { return nil }
func (e *stubEngine) PID() int                        { return 1 }
func (e *stubEngine) Run(context.Context, engine.Job, func(Progress)) ([]byte, error) {
	e.ran = true
	return []byte(`{"type":"llm","text":"x"}`), nil
}

// forwardingEngine is a stubEngine with the Forwarder capability.
type forwardingEngine struct{ stubEngine }

func (e *forwardingEngine) Forward(_ context.Context, path string, body []byte) ([]byte, error) {
	e.path, e.body = path, string(body)
	return e.answer, nil
}

func TestRunJob_EndpointJobsGoToForward(t *testing.T) {
	t.Parallel()
	job := store.Job{ID: "j1", Model: "m", Endpoint: "/v1/chat/completions", Body: json.RawMessage(`{"messages":[]}`)}
	e := &forwardingEngine{stubEngine{answer: []byte(`{"choices":[]}`)}}
	res, err := runJob(context.Background(), e, job, func(Progress) {})
	if err != nil || string(res) != `{"choices":[]}` || e.ran || e.path != job.Endpoint || e.body != string(job.Body) {
		t.Fatalf("res %s err %v; forwarded %q %q, ran %v", res, err, e.path, e.body, e.ran)
	}
	// A prompt job still goes to Run.
	res, err = runJob(context.Background(), e, store.Job{ID: "j2", Model: "m", Prompt: "hi"}, func(Progress) {})
	if err != nil || !e.ran || string(res) != `{"type":"llm","text":"x"}` {
		t.Fatalf("prompt job: %s %v", res, err)
	}
	// An engine without the capability rejects endpoint jobs: no retry helps.
	_, err = runJob(context.Background(), &stubEngine{}, job, func(Progress) {})
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("err %v, want ErrRejected", err)
	}
}
