package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/store"
)

// server.max_prompt_chars applies to the /v1/ routes as to POST /jobs: the
// text of the messages, prompt or input, in characters.
func TestOpenAI_MaxPromptChars(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t, func(c *api.Config) { c.MaxPromptChars = 20; c.MaxBodyBytes = 1 << 20 })
	long := strings.Repeat("é", 21)
	for _, tt := range []struct{ path, body, param string }{
		{"/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"` + long + `"}]}`, "messages"},
		{"/v1/chat/completions", `{"model":"llama","messages":[{"role":"system","content":"` + long[:20] + `"},{"role":"user","content":"` + long[:22] + `"}]}`, "messages"},
		{"/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":[{"type":"text","text":"` + long + `"}]}]}`, "messages"},
		{"/v1/completions", `{"model":"llama","prompt":"` + long + `"}`, "prompt"},
		{"/v1/completions", `{"model":"llama","prompt":["` + long[:20] + `","` + long[:22] + `"]}`, "prompt"},
		{"/v1/embeddings", `{"model":"qwen","input":"` + long + `"}`, "input"},
		{"/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("x", 300_000) + `"}]}`, "messages"},
	} {
		rec := b.do(t, http.MethodPost, tt.path, tt.body)
		wantOAIError(t, http.StatusBadRequest, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeInvalid, tt.param)
		if !strings.Contains(rec.Body.String(), "server.max_prompt_chars") {
			t.Errorf("%s: %s", tt.path, rec.Body)
		}
	}
	if n := len(b.eng.recorded()); n != 0 {
		t.Fatalf("%d over-long requests reached the engine", n)
	}
	// At the limit, and token IDs (not characters), pass.
	for _, tt := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"` + long[:40] + `"}]}`},
		{"/v1/completions", `{"model":"llama","prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22]}`},
	} {
		if rec := b.do(t, http.MethodPost, tt.path, tt.body); rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", tt.path, rec.Code, rec.Body)
		}
	}
}

// When scheduling.max_queue jobs and requests wait, a request for a slot
// gets 429 with Retry-After in OpenAI's shape.
func TestOpenAI_FullLineIs429(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	b.mu.Lock()
	b.acquireErr = fmt.Errorf("%w: 3 jobs and requests waiting (max 3)", store.ErrQueueFull)
	b.mu.Unlock()
	rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
	wantOAIError(t, http.StatusTooManyRequests, rec.Body.Bytes(), rec.Code, "rate_limit_error", api.CodeQueueFull, "")
	if rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "scheduling.max_queue") {
		t.Fatalf("Retry-After %q, body %s", rec.Header().Get("Retry-After"), rec.Body)
	}
}

// The job doors answer the same when the scheduler's line (queued jobs and
// waiting requests) is full.
// With metrics on, as in the daemon: their middleware hands errors to the
// error handler itself, which must add Retry-After.
func TestSubmit_FullLineIs429(t *testing.T) {
	t.Parallel()
	for _, metrics := range []bool{false, true} {
		t.Run(fmt.Sprintf("metrics=%t", metrics), func(t *testing.T) {
			b := setup(t)
			if metrics {
				withMetrics(t, b)
			}
			fullLine(t, b)
		})
	}
}

func fullLine(t *testing.T, b *testBundle) {
	b.sched.AdmitFunc = func(context.Context, string) error {
		return fmt.Errorf("%w: 3 jobs and requests waiting (max 3)", store.ErrQueueFull)
	}
	rec := b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"hi"}`)
	wantError(t, rec, http.StatusTooManyRequests, api.CodeQueueFull, "scheduling.max_queue")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("no Retry-After on POST /jobs")
	}
	rec = b.do(t, http.MethodPost, "/v1/images/generations", `{"model":"sd","prompt":"x"}`)
	wantOAIError(t, http.StatusTooManyRequests, rec.Body.Bytes(), rec.Code, "rate_limit_error", api.CodeQueueFull, "")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("no Retry-After on /v1/images/generations")
	}
}

type panicTransport struct{}

func (panicTransport) RoundTrip(*http.Request) (*http.Response, error) { panic("engine client broke") }

// A request that panics after it got its slot gives the slot back (as
// failed); before, the slot stayed taken for good.
func TestOpenAI_PanicGivesTheSlotBack(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	api.SetEngineTransport(b.server, panicTransport{})
	rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
	wantOAIError(t, http.StatusInternalServerError, rec.Body.Bytes(), rec.Code, "server_error", api.CodeInternal, "")
	got := b.releases.get()
	if len(got) != 1 || !strings.HasPrefix(got[0], "failed: ") {
		t.Fatalf("releases %v, want one failed", got)
	}
	// The Ollama door too, in its own error shape.
	rec = b.do(t, http.MethodPost, "/api/chat", `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":false}`)
	if rec.Code != http.StatusInternalServerError || !strings.HasPrefix(rec.Body.String(), `{"error":"`) {
		t.Fatalf("ollama door: %d %s", rec.Code, rec.Body)
	}
	if got := b.releases.get(); len(got) != 2 || !strings.HasPrefix(got[1], "failed: ") {
		t.Fatalf("releases %v, want two failed", got)
	}
}
