package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// streamMsg is one message of a job stream (SSE data, or /ws message).
type streamMsg struct {
	Type   string `json:"type"`
	JobID  string `json:"job_id"`
	Text   string `json:"text"`
	Tokens int    `json:"tokens"`
	Step   int    `json:"step"`
	Steps  int    `json:"steps"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

// jobStream reads GET /jobs/{id}/stream.
type jobStream struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

// openStream attaches to a job's stream; once it returns, the stream is
// subscribed to the bus.
func openStream(t *testing.T, ts *httptest.Server, id string) *jobStream {
	t.Helper()
	resp, err := ts.Client().Get(ts.URL + "/jobs/" + id + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream %s: %d %v", id, resp.StatusCode, resp.Header)
	}
	return &jobStream{t: t, resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next message, skipping comments; the SSE event name
// must match the message type.
func (s *jobStream) next() streamMsg {
	s.t.Helper()
	var name, data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && data != "":
			var m streamMsg
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				s.t.Fatalf("data %q: %v", data, err)
			}
			if m.Type != name {
				s.t.Fatalf("event %q carries type %q", name, m.Type)
			}
			return m
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// rest reads messages up to done and returns the text of the token
// messages (applying resets) and the done message.
func (s *jobStream) rest() (string, streamMsg) {
	s.t.Helper()
	var text strings.Builder
	for {
		m := s.next()
		switch m.Type {
		case "token":
			text.WriteString(m.Text)
		case "reset":
			text.Reset()
		case "done":
			return text.String(), m
		}
	}
}

// textOf is a JobTextFunc that serves texts[id] as (text, chunks).
type runningTexts struct {
	mu    sync.Mutex
	texts map[string]string
	n     map[string]int
	asked chan string
}

func (r *runningTexts) set(id, text string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.texts[id], r.n[id] = text, n
}

func (r *runningTexts) JobText(_ context.Context, id string) (string, int, bool, error) {
	r.mu.Lock()
	text, ok := r.texts[id]
	n := r.n[id]
	r.mu.Unlock()
	select {
	case r.asked <- id:
	default:
	}
	return text, n, ok, nil
}

func setupStream(t *testing.T) (*testBundle, *httptest.Server, *runningTexts) {
	t.Helper()
	b := setup(t)
	rt := &runningTexts{texts: map[string]string{}, n: map[string]int{}, asked: make(chan string, 16)}
	b.ctl.JobTextFunc = rt.JobText
	ts := httptest.NewServer(b.handler)
	t.Cleanup(ts.Close)
	return b, ts, rt
}

func (b *testBundle) progress(id string, n int, chunk string) {
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobProgress, Model: "llama", JobID: id, Tokens: n, Chunk: chunk})
}

// complete stores the result text of a running job and publishes its end.
func (b *testBundle) complete(t *testing.T, id, text string) {
	t.Helper()
	res, _ := json.Marshal(llamacpp.Result{Type: engine.KindLLM, Text: text})
	if err := b.store.Complete(id, res); err != nil {
		t.Fatal(err)
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: "llama", JobID: id, State: "completed"})
}

func TestStream_QueuedJobFromStartToEnd(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	j := b.enqueue(t, "llama")
	s := openStream(t, ts, j.ID)
	b.claim(t, "llama")
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobStarted, Model: "llama", JobID: j.ID})
	b.progress("other-job", 1, "not ours")
	for i, c := range []string{"echo:", " hello", " world"} {
		b.progress(j.ID, i+1, c)
		if m := s.next(); m.Type != "token" || m.Text != c || m.Tokens != i+1 || m.JobID != j.ID {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	b.complete(t, j.ID, "echo: hello world")
	if text, done := s.rest(); text != "" || done.Status != "completed" || done.Error != "" {
		t.Fatalf("after the last token: text %q, done %+v", text, done)
	}
}

func TestStream_LateAttachGetsTheTextSoFarThenTheRest(t *testing.T) {
	t.Parallel()
	b, ts, rt := setupStream(t)
	j := b.enqueue(t, "llama")
	b.claim(t, "llama")
	rt.set(j.ID, "echo: hello", 2)
	s := openStream(t, ts, j.ID)
	if m := s.next(); m.Type != "token" || m.Text != "echo: hello" || m.Tokens != 2 {
		t.Fatalf("catch-up %+v", m)
	}
	b.progress(j.ID, 2, " hello") // already in the catch-up text: skipped
	b.progress(j.ID, 3, " big")
	b.complete(t, j.ID, "echo: hello big world") // the event of " world" was lost
	text, done := s.rest()
	if got := "echo: hello" + text; got != "echo: hello big world" || done.Status != "completed" {
		t.Fatalf("streamed %q, done %+v: want exactly the stored text", got, done)
	}
}

func TestStream_GapIsFilledFromTheJobText(t *testing.T) {
	t.Parallel()
	b, ts, rt := setupStream(t)
	j := b.enqueue(t, "llama")
	b.claim(t, "llama")
	s := openStream(t, ts, j.ID)
	<-rt.asked // the empty catch-up
	b.progress(j.ID, 1, "a")
	rt.set(j.ID, "a b c", 3)
	b.progress(j.ID, 3, " c") // 2 was dropped
	b.progress(j.ID, 4, " d")
	rt.set(j.ID, "a b c d", 4)
	b.complete(t, j.ID, "a b c d")
	if text, done := s.rest(); text != "a b c d" || done.Status != "completed" {
		t.Fatalf("text %q done %+v", text, done)
	}
}

func TestStream_RetryResetsTheText(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	j := b.enqueue(t, "llama")
	s := openStream(t, ts, j.ID)
	b.claim(t, "llama")
	b.progress(j.ID, 1, "half")
	if _, err := b.store.Requeue(j.ID, "engine exited"); err != nil {
		t.Fatal(err)
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: "llama", JobID: j.ID, State: "queued", Error: "engine exited"})
	b.claim(t, "llama")
	b.progress(j.ID, 1, "whole")
	b.progress(j.ID, 2, " answer")
	b.complete(t, j.ID, "whole answer")
	if m := s.next(); m.Text != "half" {
		t.Fatalf("first %+v", m)
	}
	// The failed attempt's error comes first: the client learns why.
	if m := s.next(); m.Type != "error" || m.Error != "engine exited" || m.Status != "queued" {
		t.Fatalf("after the failed attempt %+v, want its error", m)
	}
	if m := s.next(); m.Type != "reset" {
		t.Fatalf("after requeue %+v, want reset", m)
	}
	if text, done := s.rest(); text != "whole answer" || done.Status != "completed" {
		t.Fatalf("text %q done %+v", text, done)
	}
}

func TestStream_FinalJobs(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	done := b.enqueue(t, "llama")
	b.claim(t, "llama")
	b.complete(t, done.ID, "echo: all of it")
	if text, m := openStream(t, ts, done.ID).rest(); text != "echo: all of it" || m.Status != "completed" {
		t.Fatalf("completed job: %q %+v", text, m)
	}
	failed := b.enqueue(t, "llama")
	b.claim(t, "llama")
	if err := b.store.Fail(failed.ID, "prompt too long"); err != nil {
		t.Fatal(err)
	}
	if text, m := openStream(t, ts, failed.ID).rest(); text != "" || m.Status != "failed" || m.Error != "prompt too long" {
		t.Fatalf("failed job: %q %+v", text, m)
	}
}

func TestStream_CancelledWhileStreaming(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	j := b.enqueue(t, "llama")
	s := openStream(t, ts, j.ID)
	if rec := b.do(t, http.MethodDelete, "/jobs/"+j.ID, ""); rec.Code != 200 {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	if _, m := s.rest(); m.Status != "cancelled" {
		t.Fatalf("done %+v", m)
	}
}

func TestStream_DiffusionProgress(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	j := b.enqueue(t, "sd")
	s := openStream(t, ts, j.ID)
	b.claim(t, "sd")
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobProgress, Model: "sd", JobID: j.ID, Step: 1, Steps: 4})
	if m := s.next(); m.Type != "progress" || m.Step != 1 || m.Steps != 4 {
		t.Fatalf("progress %+v", m)
	}
	if err := b.store.Complete(j.ID, []byte(`{"type":"diffusion"}`)); err != nil {
		t.Fatal(err)
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: "sd", JobID: j.ID, State: "completed"})
	if text, m := s.rest(); text != "" || m.Status != "completed" {
		t.Fatalf("%q %+v", text, m)
	}
}

func TestStream_Errors(t *testing.T) {
	t.Parallel()
	b, _, _ := setupStream(t)
	wantError(t, b.do(t, http.MethodGet, "/jobs/nosuchjob0000000000/stream", ""), 404, "not_found")
	wantError(t, b.do(t, http.MethodGet, "/jobs/bad!/stream", ""), 404, "not_found")
}

func TestStream_EndsWhenTheServerCloses(t *testing.T) {
	t.Parallel()
	b, ts, _ := setupStream(t)
	j := b.enqueue(t, "llama")
	s := openStream(t, ts, j.ID)
	b.server.Close()
	if _, err := s.r.ReadString('\n'); err == nil {
		for {
			if _, err := s.r.ReadString('\n'); err != nil {
				break
			}
		}
	}
	if st, _ := b.store.Get(j.ID); st.State != store.JobStateQueued {
		t.Fatalf("closing a stream changed the job: %s", st.State)
	}
}
