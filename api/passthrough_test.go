package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

func withAliases(c *api.Config) {
	c.Aliases = map[string]string{"gpt-4o-mini": "qwen", "qwen2.5:7b": "qwen"}
}

func TestPassthrough_RoutesByModel(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, withAliases)
	for _, path := range []string{"/v1/messages", "/v1/messages/count_tokens", "/v1/responses", "/v1/responses/input_tokens",
		"/v1/chat/completions/input_tokens", "/v1/rerank", "/rerank", "/infill", "/tokenize", "/detokenize", "/apply-template",
		"/props", "/lora-adapters"} {
		body := `{"model":"gpt-4o-mini","anything":[1,2,{"x":"y"}],  "kept":"as is"}`
		rec := ob.do(t, http.MethodPost, path, body)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		calls := ob.eng.recorded()
		last := calls[len(calls)-1]
		if last.path != path || last.body != body || last.method != http.MethodPost || last.contentType != "application/json" {
			t.Fatalf("%s: the engine got %+v, want the body unchanged at the same path", path, last)
		}
	}
	if got := ob.acquires.get(); len(got) != 13 || got[0] != "qwen 7" {
		t.Fatalf("acquires %v: want each by the alias's model at the interactive priority", got)
	}
	if got := ob.releases.get(); len(got) != 13 || got[12] != "completed" {
		t.Fatalf("releases %v: want every slot back", got)
	}
}

func TestPassthrough_GetByQuery(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t)
	rec := ob.do(t, http.MethodGet, "/slots?model=qwen&fail_on_no_slot=1", "")
	calls := ob.eng.recorded()
	if rec.Code != 200 || len(calls) != 1 || calls[0].method != "GET" || calls[0].path != "/slots" || calls[0].query != "fail_on_no_slot=1" {
		t.Fatalf("%d %s, engine calls %+v", rec.Code, rec.Body, calls)
	}
	wantOAIError(t, 400, ob.do(t, http.MethodGet, "/props", "").Body.Bytes(), 400, "invalid_request_error", "invalid", "model")
}

func TestPassthrough_Multipart(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, withAliases)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "a.wav")
	_, _ = fw.Write([]byte("RIFF....WAVE"))
	_ = mw.WriteField("model", "qwen2.5:7b")
	_ = mw.Close()
	body := buf.String()
	rec := ob.do(t, http.MethodPost, "/v1/audio/transcriptions", body, "Content-Type", mw.FormDataContentType())
	calls := ob.eng.recorded()
	if rec.Code != 200 || len(calls) != 1 || calls[0].body != body || calls[0].contentType != mw.FormDataContentType() {
		t.Fatalf("%d %s, engine calls %+v", rec.Code, rec.Body, calls)
	}
	if got := ob.acquires.get(); len(got) != 1 || got[0] != "qwen 7" {
		t.Fatalf("acquires %v: want the form field's model", got)
	}
	rec = ob.do(t, http.MethodPost, "/v1/audio/transcriptions", `{"model":"qwen"}`)
	wantOAIError(t, 415, rec.Body.Bytes(), rec.Code, "invalid_request_error", "unsupported_media_type", "")
}

func TestPassthrough_Errors(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t)
	rec := ob.do(t, http.MethodPost, "/tokenize", `{"model":"nope","content":"x"}`)
	wantOAIError(t, 404, rec.Body.Bytes(), rec.Code, "invalid_request_error", "model_not_found", "model")
	rec = ob.do(t, http.MethodPost, "/v1/responses", `{"model":"sd","input":"x"}`)
	wantOAIError(t, 400, rec.Body.Bytes(), rec.Code, "invalid_request_error", "model_not_supported", "model")
	if !strings.Contains(rec.Body.String(), `\"sd\" does not serve /v1/responses`) {
		t.Fatalf("message does not name the model and the route: %s", rec.Body)
	}
	if len(ob.eng.recorded()) != 0 || len(ob.acquires.get()) != 0 {
		t.Fatal("a refused request reached the scheduler or the engine")
	}
}

func TestPassthrough_ServesRouteHook(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, func(c *api.Config) {
		c.ServesRoute = func(model, path string) bool { return path != "/infill" }
	})
	if rec := ob.do(t, http.MethodPost, "/infill", `{"model":"qwen"}`); rec.Code != 400 {
		t.Fatalf("/infill refused by the hook: %d %s", rec.Code, rec.Body)
	}
	if rec := ob.do(t, http.MethodPost, "/tokenize", `{"model":"sd"}`); rec.Code != 200 {
		t.Fatalf("/tokenize allowed by the hook: %d %s", rec.Code, rec.Body)
	}
}

// wantAnthropicError checks {"type":"error","error":{"type","message"}}.
func wantAnthropicError(t *testing.T, rec interface {
	Result() *http.Response
}, status int, typ string) {
	t.Helper()
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Type  string
		Error map[string]string
	}
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != status || e.Type != "error" || e.Error["type"] != typ ||
		e.Error["message"] == "" || len(e.Error) != 2 {
		t.Fatalf("%d %s: want %d in Anthropic's shape with type %s", resp.StatusCode, b, status, typ)
	}
}

func TestAnthropic_ErrorsAndKeys(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, func(c *api.Config) { c.APIKeys = []string{"sk-ant"} })
	body := `{"model":"qwen","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	wantAnthropicError(t, ob.do(t, http.MethodPost, "/v1/messages", body), 401, "authentication_error")
	wantAnthropicError(t, ob.do(t, http.MethodPost, "/v1/messages", body, "x-api-key", "wrong"), 401, "authentication_error")
	wantAnthropicError(t, ob.do(t, http.MethodPost, "/v1/messages/count_tokens", `{"model":"nope"}`, "x-api-key", "sk-ant"), 404, "not_found_error")
	rec := ob.do(t, http.MethodPost, "/v1/messages", body, "x-api-key", "sk-ant", "anthropic-version", "2023-06-01")
	if rec.Code != 200 {
		t.Fatalf("x-api-key: %d %s", rec.Code, rec.Body)
	}
	// x-api-key is accepted on every route, Bearer on the Anthropic ones.
	if rec := ob.do(t, http.MethodGet, "/v1/models", "", "x-api-key", "sk-ant"); rec.Code != 200 {
		t.Fatalf("x-api-key on /v1/models: %d", rec.Code)
	}
	if rec := ob.do(t, http.MethodPost, "/v1/messages", body, "Authorization", "Bearer sk-ant"); rec.Code != 200 {
		t.Fatalf("Bearer on /v1/messages: %d", rec.Code)
	}
}

func TestUpstream(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, withAliases)
	rec := ob.do(t, http.MethodGet, "/upstream/qwen2.5:7b/props?x=1", "")
	calls := ob.eng.recorded()
	if rec.Code != 200 || len(calls) != 1 || calls[0].method != "GET" || calls[0].path != "/props" || calls[0].query != "x=1" || calls[0].body != "" {
		t.Fatalf("%d %s, engine calls %+v", rec.Code, rec.Body, calls)
	}
	rec = ob.do(t, http.MethodPost, "/upstream/qwen/slots/0?action=save", `{"filename":"a.bin"}`)
	calls = ob.eng.recorded()
	if rec.Code != 200 || len(calls) != 2 || calls[1].path != "/slots/0" || calls[1].query != "action=save" || calls[1].body != `{"filename":"a.bin"}` {
		t.Fatalf("%d %s, engine calls %+v", rec.Code, rec.Body, calls)
	}
	if got := ob.acquires.get(); len(got) != 2 || got[0] != "qwen 7" || len(ob.releases.get()) != 2 {
		t.Fatalf("acquires %v releases %v", got, ob.releases.get())
	}
	rec = ob.do(t, http.MethodGet, "/upstream/nope/props", "")
	wantOAIError(t, 404, rec.Body.Bytes(), rec.Code, "invalid_request_error", "model_not_found", "model")
	// The path reaches the engine as the client escaped it: an escaped "?"
	// or "%" stays in the path.
	for _, c := range []struct{ path, want string }{{"/upstream/qwen/a%3Fb", "/a?b"}, {"/upstream/qwen/%25zz", "/%zz"}} {
		rec = ob.do(t, http.MethodGet, c.path, "")
		calls = ob.eng.recorded()
		if last := calls[len(calls)-1]; rec.Code != 200 || last.path != c.want || last.query != "" {
			t.Fatalf("%s: %d %s, engine got %+v", c.path, rec.Code, rec.Body, last)
		}
	}
	// A path no engine request can carry is refused before a slot is taken.
	before := len(ob.acquires.get())
	rec = ob.do(t, http.MethodGet, "/upstream/qwen/a%0Ab", "")
	wantOAIError(t, 400, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeInvalid, "")
	if got := ob.acquires.get(); len(got) != before {
		t.Fatalf("a refused path took a slot: %v", got)
	}
}

// TestUpstream_DiffusionTag: raw bodies for a diffusion model (sd-server)
// that name its parameter tag, as they are or spelt with JSON escapes, get
// 400 before a slot is taken; the same text for an LLM, and a clean body
// for the diffusion model, pass.
func TestUpstream_DiffusionTag(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t)
	for _, body := range []string{
		`{"prompt":"cat <sd_cpp_extra_args>{\"sample_params\":{\"sample_steps\":100000}}</sd_cpp_extra_args>"}`,
		`{"prompt":"cat <SD_CPP_EXTRA_ARGS>{}</SD_CPP_EXTRA_ARGS>"}`,
		`{"prompt":"cat <\u0073d_cpp_extra_args>{}</\u0073d_cpp_extra_args>"}`,
	} {
		rec := ob.do(t, http.MethodPost, "/upstream/sd/v1/images/generations", body)
		wantOAIError(t, 400, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeInvalid, "")
	}
	if got := ob.acquires.get(); len(got) != 0 {
		t.Fatalf("refused bodies took slots: %v", got)
	}
	for _, c := range []struct{ model, body string }{
		{"qwen", `{"prompt":"what is <sd_cpp_extra_args>?"}`},
		{"sd", `{"prompt":"a cat"}`},
	} {
		if rec := ob.do(t, http.MethodPost, "/upstream/"+c.model+"/v1/x", c.body); rec.Code != 200 {
			t.Fatalf("%s %s: %d %s", c.model, c.body, rec.Code, rec.Body)
		}
	}
}

func TestAliases_ModelList(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, withAliases)
	var list struct {
		Data []struct {
			ID      string
			AliasOf string `json:"alias_of"`
		}
	}
	decodeJSON(t, ob.do(t, http.MethodGet, "/v1/models", ""), &list)
	ids := map[string]string{}
	for _, m := range list.Data {
		ids[m.ID] = m.AliasOf
	}
	if len(ids) != 5 || ids["gpt-4o-mini"] != "qwen" || ids["qwen2.5:7b"] != "qwen" || ids["qwen"] != "" {
		t.Fatalf("models %v", ids)
	}
	if rec := ob.do(t, http.MethodGet, "/v1/models/gpt-4o-mini", ""); rec.Code != 200 {
		t.Fatalf("GET /v1/models/alias: %d", rec.Code)
	}
	rec := ob.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}`)
	if got := ob.acquires.get(); rec.Code != 200 || len(got) != 1 || got[0] != "qwen 7" {
		t.Fatalf("chat by alias: %d, acquires %v", rec.Code, got)
	}
	id := ob.submit(t, `{"model":"qwen2.5:7b","prompt":"hi"}`)
	if j, err := ob.store.Get(id); err != nil || j.Model != "qwen" {
		t.Fatalf("job by alias: %+v %v", j, err)
	}
}
