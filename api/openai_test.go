package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
)

// fakeEngine answers llama-server's OpenAI routes: a canned JSON answer, or
// with "stream": true one SSE chunk per word of "echo: hello world", each
// after a token from gate when gate is set.
type fakeEngine struct {
	srv  *httptest.Server
	gate chan struct{}

	mu    sync.Mutex
	calls []engineCall
	// aborted is closed when a streaming request's client goes away
	// before the last chunk.
	aborted chan struct{}
	// dieAfter > 0: after that many chunks the engine cuts the connection.
	dieAfter int
	// status, body: a canned error answer instead of the normal one.
	status int
	body   string
}

type engineCall struct{ path, body, method, query, contentType string }

func newFakeEngine(t testing.TB) *fakeEngine {
	t.Helper()
	e := &fakeEngine{aborted: make(chan struct{})}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEngine) recorded() []engineCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]engineCall(nil), e.calls...)
}

const engineAnswer = `{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"echo: hello world"}}],"model":"llama","object":"chat.completion"}`

func (e *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.calls = append(e.calls, engineCall{r.URL.Path, string(b), r.Method, r.URL.RawQuery, r.Header.Get("Content-Type")})
	status, body, dieAfter, gate := e.status, e.body, e.dieAfter, e.gate
	e.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
		return
	}
	var req struct{ Stream bool }
	_ = json.Unmarshal(b, &req)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, engineAnswer)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	words := []string{"echo:", " hello", " world"}
	for i, word := range words {
		if i > 0 && gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				close(e.aborted)
				return
			}
		}
		if dieAfter > 0 && i == dieAfter {
			conn, _, _ := rc.Hijack()
			_ = conn.Close()
			return
		}
		fmt.Fprintf(w, "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":%q}}],\"object\":\"chat.completion.chunk\"}\n\n", word)
		_ = rc.Flush()
	}
	fmt.Fprint(w, "data: {\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"delta\":{}}],\"object\":\"chat.completion.chunk\"}\n\ndata: [DONE]\n\n")
}

// oaBundle is a server whose interactive slots come from a fake Acquire
// that hands out the fake engine and records what it was asked.
type oaBundle struct {
	*testBundle
	eng      *fakeEngine
	ts       *httptest.Server // the API on a real listener, for streams
	acquires *calls           // "model priority"
	releases *calls           // outcomes: completed, cancelled, failed: …

	mu         sync.Mutex
	acquireErr error           // Acquire fails with it
	engineURL  string          // overrides the engine's URL
	block      chan struct{}   // non-nil: Acquire waits for ctx, closing block when it starts waiting
	slotCtx    context.Context // the slots' context
	delay      time.Duration   // Acquire takes this long (a model load)
	server     *api.Server
}

// outcome names a finish error as the scheduler's bus does.
func outcome(err error) string {
	switch {
	case err == nil:
		return "completed"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "failed: " + err.Error()
}

func setupOpenAI(t testing.TB, opts ...func(*api.Config)) *oaBundle {
	t.Helper()
	ob := &oaBundle{eng: newFakeEngine(t), acquires: &calls{}, releases: &calls{}}
	acquire := func(ctx context.Context, model string, prio int) (string, context.Context, func(error), error) {
		ob.acquires.add(fmt.Sprintf("%s %d", model, prio))
		ob.mu.Lock()
		err, url, block, sctx, delay := ob.acquireErr, ob.engineURL, ob.block, ob.slotCtx, ob.delay
		ob.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return "", nil, nil, ctx.Err()
		}
		if block != nil {
			close(block)
			<-ctx.Done()
			return "", nil, nil, ctx.Err()
		}
		if err != nil {
			return "", nil, nil, err
		}
		if url == "" {
			url = ob.eng.srv.URL
		}
		var once sync.Once
		return url, sctx, func(err error) { once.Do(func() { ob.releases.add(outcome(err)) }) }, nil
	}
	ob.testBundle = setupWith(t, setupOpts{
		config: func(c *api.Config) {
			c.InteractivePriority = 7
			c.Embeddings = map[string]bool{"qwen": true}
			c.MaxBodyBytes = 4096
			c.MaxPromptChars = 1000 // the common bundle's 10 is shorter than these tests' messages
			for _, o := range opts {
				o(c)
			}
		},
		server: func(s *api.Server) { api.SetAcquireFunc(s, acquire); ob.server = s },
	})
	ob.ts = httptest.NewServer(ob.handler)
	t.Cleanup(ob.ts.Close)
	return ob
}

// wantOpenAIError checks an error answer of the /v1/ routes: status and
// exactly the OpenAI shape {"error":{"message","type","param","code"}}.
func wantOAIError(t *testing.T, status int, body []byte, gotStatus int, typ, code, param string) {
	t.Helper()
	if gotStatus != status {
		t.Errorf("status %d, want %d (body %s)", gotStatus, status, body)
	}
	var top map[string]map[string]any
	if err := json.Unmarshal(body, &top); err != nil || len(top) != 1 || top["error"] == nil {
		t.Fatalf("error body %s: not {\"error\":{…}} (%v)", body, err)
	}
	e := top["error"]
	if len(e) != 4 {
		t.Errorf("error object %v: want exactly message, type, param, code", e)
	}
	if m, _ := e["message"].(string); m == "" {
		t.Errorf("empty message in %s", body)
	}
	if e["type"] != typ || e["code"] != code {
		t.Errorf("type %v code %v, want %s %s (body %s)", e["type"], e["code"], typ, code, body)
	}
	switch {
	case param == "" && e["param"] != nil:
		t.Errorf("param %v, want null", e["param"])
	case param != "" && e["param"] != param:
		t.Errorf("param %v, want %s", e["param"], param)
	}
	if param != "" && !strings.Contains(e["message"].(string), param) {
		t.Errorf("message %q does not name %s", e["message"], param)
	}
}

func TestOpenAI_Models(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	rec := b.do(t, http.MethodGet, "/v1/models", "")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy, Type string
			Created                   int64
		} `json:"data"`
	}
	decodeJSON(t, rec, &list)
	if rec.Code != 200 || list.Object != "list" || len(list.Data) != 3 {
		t.Fatalf("GET /v1/models: %d %s", rec.Code, rec.Body)
	}
	for i, want := range []string{"llama", "qwen", "sd"} {
		if m := list.Data[i]; m.ID != want || m.Object != "model" || m.Created == 0 || m.Type != string(testModels[want]) {
			t.Errorf("data[%d] = %+v, want id %s", i, m, want)
		}
	}
	rec = b.do(t, http.MethodGet, "/v1/models/qwen", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"qwen"`) {
		t.Fatalf("GET /v1/models/qwen: %d %s", rec.Code, rec.Body)
	}
	rec = b.do(t, http.MethodGet, "/v1/models/nope", "")
	wantOAIError(t, 404, rec.Body.Bytes(), rec.Code, "invalid_request_error", "model_not_found", "model")
	if len(b.acquires.get()) != 0 {
		t.Fatal("listing models acquired a slot")
	}
}

func TestOpenAI_Validation(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	const chat, cmpl, emb = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, path, body string
		status           int
		typ, code, param string
	}{
		{"NoModel", chat, `{` + msgs + `}`, 400, "invalid_request_error", "invalid", "model"},
		{"UnknownModel", chat, `{"model":"nope",` + msgs + `}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"DiffusionModel", chat, `{"model":"sd",` + msgs + `}`, 400, "invalid_request_error", "model_not_supported", "model"},
		{"ModelWrongType", chat, `{"model":5,` + msgs + `}`, 400, "invalid_request_error", "invalid", "model"},
		{"NoMessages", chat, `{"model":"llama"}`, 400, "invalid_request_error", "invalid", "messages"},
		{"EmptyMessages", chat, `{"model":"llama","messages":[]}`, 400, "invalid_request_error", "invalid", "messages"},
		{"MessagesNotArray", chat, `{"model":"llama","messages":"hi"}`, 400, "invalid_request_error", "invalid", "messages"},
		{"NoRole", chat, `{"model":"llama","messages":[{"content":"hi"}]}`, 400, "invalid_request_error", "invalid", "messages[0].role"},
		{"BadContent", chat, `{"model":"llama","messages":[{"role":"user","content":"a"},{"role":"user","content":7}]}`, 400, "invalid_request_error", "invalid", "messages[1].content"},
		{"MaxTokensZero", chat, `{"model":"llama",` + msgs + `,"max_tokens":0}`, 400, "invalid_request_error", "invalid", "max_tokens"},
		{"MaxCompletionTokensNegative", chat, `{"model":"llama",` + msgs + `,"max_completion_tokens":-1}`, 400, "invalid_request_error", "invalid", "max_completion_tokens"},
		{"MaxTokensFraction", chat, `{"model":"llama",` + msgs + `,"max_tokens":1.5}`, 400, "invalid_request_error", "invalid", "max_tokens"},
		{"TemperatureHigh", chat, `{"model":"llama",` + msgs + `,"temperature":2.5}`, 400, "invalid_request_error", "invalid", "temperature"},
		{"TemperatureNegative", cmpl, `{"model":"llama","prompt":"x","temperature":-0.1}`, 400, "invalid_request_error", "invalid", "temperature"},
		{"TopPHigh", chat, `{"model":"llama",` + msgs + `,"top_p":1.5}`, 400, "invalid_request_error", "invalid", "top_p"},
		{"NTwo", chat, `{"model":"llama",` + msgs + `,"n":2}`, 400, "invalid_request_error", "invalid", "n"},
		{"StreamNotBool", chat, `{"model":"llama",` + msgs + `,"stream":"yes"}`, 400, "invalid_request_error", "invalid", "stream"},
		{"NoPrompt", cmpl, `{"model":"llama"}`, 400, "invalid_request_error", "invalid", "prompt"},
		{"NullPrompt", cmpl, `{"model":"llama","prompt":null}`, 400, "invalid_request_error", "invalid", "prompt"},
		{"EmptyPromptList", cmpl, `{"model":"llama","prompt":[ ]}`, 400, "invalid_request_error", "invalid", "prompt"},
		{"PromptNumber", cmpl, `{"model":"llama","prompt":3}`, 400, "invalid_request_error", "invalid", "prompt"},
		{"NoInput", emb, `{"model":"qwen"}`, 400, "invalid_request_error", "invalid", "input"},
		{"EmbeddingsNotEnabled", emb, `{"model":"llama","input":"x"}`, 400, "invalid_request_error", "model_not_supported", "model"},
		{"NotJSON", chat, `{"model":`, 400, "invalid_request_error", "invalid_json", ""},
		{"TrailingData", chat, `{"model":"llama",` + msgs + `} {}`, 400, "invalid_request_error", "invalid_json", ""},
		{"NotObject", chat, `[1]`, 400, "invalid_request_error", "invalid_json", ""},
		{"TooLarge", chat, `{"model":"llama","messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`, 413, "invalid_request_error", "body_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := b.do(t, http.MethodPost, tt.path, tt.body)
			wantOAIError(t, tt.status, rec.Body.Bytes(), rec.Code, tt.typ, tt.code, tt.param)
		})
	}
	if got := b.acquires.get(); len(got) != 0 {
		t.Fatalf("invalid requests acquired slots: %v", got)
	}
	if got := b.eng.recorded(); len(got) != 0 {
		t.Fatalf("invalid requests reached the engine: %v", got)
	}
}

func TestOpenAI_ErrorsOfOtherLayersUseTheOpenAIShape(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t, func(c *api.Config) { c.APIKeys = []string{"k"} })
	rec := b.do(t, http.MethodGet, "/v1/models", "")
	wantOAIError(t, 401, rec.Body.Bytes(), rec.Code, "authentication_error", "unauthorized", "")
	rec = b.do(t, http.MethodGet, "/v1/nothing-here", "", "Authorization", "Bearer k")
	wantOAIError(t, 404, rec.Body.Bytes(), rec.Code, "not_found_error", "not_found", "")
	rec = b.do(t, http.MethodGet, "/v1/chat/completions", "", "Authorization", "Bearer k")
	wantOAIError(t, 405, rec.Body.Bytes(), rec.Code, "invalid_request_error", "method_not_allowed", "")
	// The native routes keep their own shape.
	rec = b.do(t, http.MethodGet, "/models", "")
	wantError(t, rec, 401, api.CodeUnauthorized)
}

// post sends body to the API's real listener.
func (b *oaBundle) post(t *testing.T, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.ts.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

func TestOpenAI_ForwardsAndRelaysUntouched(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	tests := []struct{ path, body, model string }{
		{"/v1/chat/completions", `{"model":"llama", "messages":[{"role":"user","content":"hello world"}],"tools":[],"max_tokens":5,"temperature":0.2}`, "llama"},
		{"/v1/completions", `{"model":"qwen","prompt":["a","b"],"max_tokens":3,"logprobs":2}`, "qwen"},
		{"/v1/embeddings", `{"model":"qwen","input":["x","y"],"encoding_format":"float"}`, "qwen"},
	}
	for i, tt := range tests {
		resp := b.post(t, context.Background(), tt.path, tt.body)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != engineAnswer {
			t.Fatalf("%s: %d %s", tt.path, resp.StatusCode, got)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", tt.path, ct)
		}
		if resp.ContentLength != int64(len(engineAnswer)) {
			t.Errorf("%s: Content-Length %d, want %d (relayed, not chunked)", tt.path, resp.ContentLength, len(engineAnswer))
		}
		calls := b.eng.recorded()
		if len(calls) != i+1 || calls[i].path != tt.path || calls[i].body != tt.body {
			t.Fatalf("engine got %+v, want %s with the body unchanged", calls, tt.path)
		}
		if acq := b.acquires.get(); acq[i] != tt.model+" 7" {
			t.Fatalf("acquire %q, want model %s at interactive priority 7", acq[i], tt.model)
		}
		if rel := b.releases.get(); len(rel) != i+1 || rel[i] != "completed" {
			t.Fatalf("releases %v", rel)
		}
	}
}

// nextSSE reads one SSE event ("data: …" up to the blank line).
func nextSSE(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event: %v (so far %q)", err, ev.String())
		}
		if line == "\n" {
			if ev.Len() > 0 {
				return ev.String()
			}
			continue
		}
		ev.WriteString(line)
	}
}

func TestOpenAI_StreamIsRelayedChunkByChunk(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	gate := make(chan struct{})
	b.eng.set(func(e *fakeEngine) { e.gate = gate })
	resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"hello world"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	var text strings.Builder
	for i := range 3 {
		// Each chunk arrives before the engine is allowed to make the next:
		// nothing is held back on the way.
		ev := nextSSE(t, r)
		var chunk struct {
			Choices []struct{ Delta struct{ Content string } }
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(ev), "data: ")), &chunk); err != nil || len(chunk.Choices) != 1 {
			t.Fatalf("chunk %d %q: %v", i, ev, err)
		}
		text.WriteString(chunk.Choices[0].Delta.Content)
		if i < 2 {
			gate <- struct{}{}
		}
	}
	rest, _ := io.ReadAll(r)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || !strings.Contains(string(rest), `"finish_reason":"stop"`) {
		t.Fatalf("end of stream %q", rest)
	}
	if text.String() != "echo: hello world" {
		t.Fatalf("text %q", text.String())
	}
	if rel := b.releases.get(); len(rel) != 1 || rel[0] != "completed" {
		t.Fatalf("releases %v", rel)
	}
}

func TestOpenAI_ClientDisconnectMidStreamAbortsTheEngineAndReleases(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	b.eng.set(func(e *fakeEngine) { e.gate = make(chan struct{}) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := b.post(t, ctx, "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"hello world"}]}`)
	defer resp.Body.Close()
	if ev := nextSSE(t, bufio.NewReader(resp.Body)); !strings.Contains(ev, `"echo:"`) {
		t.Fatalf("first chunk %q", ev)
	}
	cancel() // the client goes away mid-stream
	<-b.eng.aborted
	waitFor(t, func() bool { return len(b.releases.get()) == 1 }, "slot released")
	if rel := b.releases.get(); rel[0] != "cancelled" {
		t.Fatalf("release %v: want the interactive job cancelled", rel)
	}
}

func TestOpenAI_ClientLeavingWhileWaitingForASlot(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	waiting := make(chan struct{})
	b.set(func(b *oaBundle) { b.block = waiting })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.ts.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"hi"}]}`))
		resp, err := b.ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-waiting // the request waits in Acquire (for a model swap, say)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error %v", err)
	}
	if len(b.eng.recorded()) != 0 || len(b.releases.get()) != 0 {
		t.Fatal("a request that never got a slot reached the engine or released one")
	}
}

func TestOpenAI_AcquireErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		typ    string
		code   string
	}{
		{"Unknown", fmt.Errorf("%w %q", scheduler.ErrUnknownModel, "llama"), 404, "invalid_request_error", "model_not_found"},
		{"Unavailable", fmt.Errorf("%w: model file not found", scheduler.ErrUnavailable), 503, "server_error", "model_unavailable"},
		{"TooLarge", fmt.Errorf("%w: 9000 MiB", scheduler.ErrTooLarge), 422, "invalid_request_error", "model_too_large"},
		{"LoadFailed", fmt.Errorf("%w: exit status 1", scheduler.ErrLoadFailed), 503, "server_error", "model_load_failed"},
		{"Stopped", scheduler.ErrStopped, 503, "server_error", "shutting_down"},
		{"Other", errors.New("boom"), 500, "server_error", "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupOpenAI(t)
			b.set(func(b *oaBundle) { b.acquireErr = tt.err })
			rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
			param := "model"
			if tt.code == "internal" || tt.code == "shutting_down" {
				param = ""
			}
			wantOAIError(t, tt.status, rec.Body.Bytes(), rec.Code, tt.typ, tt.code, param)
		})
	}
}

func TestOpenAI_EngineFailures(t *testing.T) {
	t.Parallel()
	t.Run("NotListening", func(t *testing.T) {
		t.Parallel()
		b := setupOpenAI(t)
		dead := httptest.NewServer(http.NotFoundHandler())
		b.set(func(b *oaBundle) { b.engineURL = dead.URL })
		dead.Close()
		rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
		wantOAIError(t, 502, rec.Body.Bytes(), rec.Code, "server_error", "engine_failed", "")
		if rel := b.releases.get(); len(rel) != 1 || !strings.HasPrefix(rel[0], "failed: engine request") {
			t.Fatalf("releases %v, want failed", rel)
		}
	})
	t.Run("DiesMidStream", func(t *testing.T) {
		t.Parallel()
		b := setupOpenAI(t)
		b.eng.set(func(e *fakeEngine) { e.dieAfter = 1 })
		resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"x"}]}`)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first, rest, _ := strings.Cut(string(body), "\n\n")
		if !strings.Contains(first, `"echo:"`) || !strings.Contains(rest, `"code":"engine_failed"`) || strings.Contains(rest, "[DONE]") {
			t.Fatalf("stream %q: want the first chunk, then an error event", body)
		}
		var ev map[string]map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(rest, "data: "))), &ev); err != nil || ev["error"]["type"] != "server_error" {
			t.Fatalf("error event %q: %v", rest, err)
		}
		if rel := b.releases.get(); len(rel) != 1 || !strings.HasPrefix(rel[0], "failed: engine failed mid-answer") {
			t.Fatalf("releases %v, want failed", rel)
		}
	})
	t.Run("SlotEndsMidStream", func(t *testing.T) {
		t.Parallel()
		b := setupOpenAI(t)
		gate := make(chan struct{})
		b.eng.set(func(e *fakeEngine) { e.gate = gate })
		sctx, stop := context.WithCancelCause(context.Background())
		b.set(func(b *oaBundle) { b.slotCtx = sctx })
		resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"x"}]}`)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		if ev := nextSSE(t, r); !strings.Contains(ev, `"echo:"`) {
			t.Fatalf("first chunk %q", ev)
		}
		stop(errors.New("engine exited: signal: killed")) // the scheduler saw the engine die
		if ev := nextSSE(t, r); !strings.Contains(ev, `"code":"engine_failed"`) {
			t.Fatalf("after the slot ended: %q, want an error event", ev)
		}
		<-b.eng.aborted
		waitFor(t, func() bool { return len(b.releases.get()) == 1 }, "slot finished")
		if rel := b.releases.get(); rel[0] != "failed: engine stopped: engine exited: signal: killed" {
			t.Fatalf("releases %v", rel)
		}
	})
	t.Run("EngineErrorRelayed", func(t *testing.T) {
		t.Parallel()
		b := setupOpenAI(t)
		const answer = `{"error":{"code":400,"message":"request (602 tokens) exceeds the available context size (256 tokens), try increasing it","type":"exceed_context_size_error"}}`
		b.eng.set(func(e *fakeEngine) { e.status, e.body = 400, answer })
		resp := b.post(t, context.Background(), "/v1/completions", `{"model":"llama","prompt":"long"}`)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || string(body) != answer {
			t.Fatalf("%d %s: want the engine's answer as is", resp.StatusCode, body)
		}
		if rel := b.releases.get(); len(rel) != 1 || rel[0] != "failed: engine answered 400 Bad Request" {
			t.Fatalf("releases %v", rel)
		}
	})
}

func TestOpenAI_WithoutInteractiveScheduler(t *testing.T) {
	t.Parallel()
	b := setup(t) // the fake scheduler has no Acquire
	rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
	wantOAIError(t, 501, rec.Body.Bytes(), rec.Code, "server_error", "not_available", "")
}

// waitFor polls cond until it holds (10 s at most).
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// set changes the fake engine's behaviour under its lock.
func (e *fakeEngine) set(f func(e *fakeEngine)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

// set changes the fake Acquire's behaviour under its lock.
func (b *oaBundle) set(f func(b *oaBundle)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func TestOpenAI_NewRoutesNeedTheKey(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t, func(c *api.Config) { c.APIKeys = []string{"k"} })
	done := b.enqueue(t, "llama")
	b.claim(t, "llama")
	b.complete(t, done.ID, "echo: x")
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/v1/models", ""},
		{http.MethodGet, "/v1/models/llama", ""},
		{http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`},
		{http.MethodPost, "/v1/completions", `{"model":"llama","prompt":"hi"}`},
		{http.MethodPost, "/v1/embeddings", `{"model":"qwen","input":"hi"}`},
		{http.MethodGet, "/jobs/" + done.ID + "/stream", ""},
		{http.MethodGet, "/ws", ""},
	}
	for _, r := range routes {
		rec := b.do(t, r.method, r.path, r.body)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without a key: %d", r.method, r.path, rec.Code)
		}
		rec = b.do(t, r.method, r.path, r.body, "Authorization", "Bearer k")
		want := http.StatusOK
		if r.path == "/ws" {
			want = http.StatusUpgradeRequired // past auth, no handshake
		}
		if rec.Code != want {
			t.Errorf("%s %s with the key: %d %s", r.method, r.path, rec.Code, rec.Body)
		}
	}
}

// A streaming request that waits for a load gets its event stream at once,
// with comments that keep its client's read timeout from firing; the answer
// follows in the same stream.
func TestOpenAI_StreamWaitingForALoadGetsComments(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	api.SetWaitNotes(b.server, 20*time.Millisecond, 20*time.Millisecond)
	b.mu.Lock()
	b.delay = 200 * time.Millisecond
	b.mu.Unlock()
	resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"hello world"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	if n := strings.Count(text, ": waiting for a slot of model llama\n\n"); n < 3 {
		t.Fatalf("%d waiting comments in %q, want several", n, text)
	}
	if !strings.HasSuffix(text, "data: [DONE]\n\n") || !strings.Contains(text, `"content":"echo:"`) {
		t.Fatalf("stream %q lacks the answer", text)
	}
	if rel := b.releases.get(); len(rel) != 1 || rel[0] != "completed" {
		t.Fatalf("releases %v", rel)
	}
}

// When the wait ends in an error after the stream opened, the error is the
// stream's last event, in the OpenAI shape.
func TestOpenAI_StreamWaitEndsInAnErrorEvent(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	api.SetWaitNotes(b.server, 20*time.Millisecond, 20*time.Millisecond)
	b.mu.Lock()
	b.delay = 100 * time.Millisecond
	b.acquireErr = fmt.Errorf("llama: %w: exiting due to model loading error", scheduler.ErrLoadFailed)
	b.mu.Unlock()
	resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	if resp.StatusCode != 200 || !strings.HasPrefix(text, ": waiting") {
		t.Fatalf("status %d body %q", resp.StatusCode, text)
	}
	last := text[strings.LastIndex(strings.TrimSpace(text), "\n")+1:]
	if !strings.HasPrefix(last, "data: {\"error\":") || !strings.Contains(last, `"code":"model_load_failed"`) {
		t.Fatalf("last event %q, want the load error", last)
	}
	// A request that does not stream still gets a plain status.
	rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"x"}]}`)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("non-streaming: %d %s", rec.Code, rec.Body)
	}
}

// An engine that cannot be reached after a wait that opened the stream:
// the stream ends with the error event.
func TestOpenAI_StreamOpenedThenEngineUnreachable(t *testing.T) {
	t.Parallel()
	b := setupOpenAI(t)
	api.SetWaitNotes(b.server, 20*time.Millisecond, 20*time.Millisecond)
	b.mu.Lock()
	b.delay = 100 * time.Millisecond
	b.engineURL = "http://127.0.0.1:1" // nothing listens there
	b.mu.Unlock()
	resp := b.post(t, context.Background(), "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), ": waiting") || !strings.Contains(string(body), `"code":"engine_failed"`) {
		t.Fatalf("stream %q, want comments then the engine_failed event", body)
	}
	if rel := b.releases.get(); len(rel) != 1 || !strings.HasPrefix(rel[0], "failed") {
		t.Fatalf("releases %v", rel)
	}
}
