package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
)

func setupOllama(t *testing.T) (*oaBundle, *calls) {
	t.Helper()
	ob := setupOpenAI(t, withAliases)
	keeps := &calls{}
	api.SetKeepAliveFunc(ob.server, func(model string, d time.Duration) { keeps.add(fmt.Sprintf("%s %v", model, d)) })
	ob.handler = ob.server.Handler()
	return ob, keeps
}

func TestOllama_ChatTranslation(t *testing.T) {
	t.Parallel()
	ob, keeps := setupOllama(t)
	body := `{"model":"qwen2.5:7b","stream":false,"keep_alive":"10m","format":"json",
		"options":{"temperature":0.3,"num_predict":12,"top_k":5,"num_ctx":8192,"stop":["x"]},
		"tools":[{"type":"function","function":{"name":"f"}}],
		"messages":[{"role":"user","content":"hi","images":["aGk="]}]}`
	rec := ob.do(t, http.MethodPost, "/api/chat", body)
	var out map[string]any
	decodeJSON(t, rec, &out)
	msg, _ := out["message"].(map[string]any)
	if rec.Code != 200 || out["done"] != true || out["done_reason"] != "stop" || msg["content"] != "echo: hello world" ||
		out["model"] != "qwen2.5:7b" || out["total_duration"] == nil || out["eval_count"] == nil {
		t.Fatalf("%d %v", rec.Code, out)
	}
	calls := ob.eng.recorded()
	var sent map[string]any
	if len(calls) != 1 || calls[0].path != "/v1/chat/completions" || json.Unmarshal([]byte(calls[0].body), &sent) != nil {
		t.Fatalf("engine calls %+v", calls)
	}
	want := map[string]any{"stream": true, "temperature": 0.3, "max_tokens": 12.0, "top_k": 5.0, "model": "qwen2.5:7b"}
	for k, v := range want {
		if sent[k] != v {
			t.Errorf("engine body %s = %v, want %v (body %s)", k, sent[k], v, calls[0].body)
		}
	}
	if _, ok := sent["num_ctx"]; ok || sent["response_format"] == nil || sent["tools"] == nil || !strings.Contains(calls[0].body, `"url":"data:image/png;base64,aGk="`) {
		t.Errorf("engine body %s", calls[0].body)
	}
	if got := keeps.get(); len(got) != 1 || got[0] != "qwen 10m0s" {
		t.Fatalf("keep-alive %v", got)
	}
	if got := ob.acquires.get(); len(got) != 1 || got[0] != "qwen 7" {
		t.Fatalf("acquires %v", got)
	}
}

func TestOllama_StreamNDJSON(t *testing.T) {
	t.Parallel()
	ob, keeps := setupOllama(t)
	resp, err := http.Post(ob.ts.URL+"/api/generate", "application/json", strings.NewReader(`{"model":"qwen","prompt":"hi","keep_alive":0}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	var text strings.Builder
	var last map[string]any
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		text.WriteString(last["response"].(string))
		n++
	}
	if n != 4 || text.String() != "echo: hello world" || last["done"] != true || last["done_reason"] != "stop" {
		t.Fatalf("%d lines, text %q, last %v", n, text.String(), last)
	}
	if got := keeps.get(); len(got) != 1 || got[0] != "qwen 0s" {
		t.Fatalf("keep-alive %v", got)
	}
}

func TestOllama_ModelsAndErrors(t *testing.T) {
	t.Parallel()
	ob, _ := setupOllama(t)
	var tags struct {
		Models []struct{ Name, Model string }
	}
	decodeJSON(t, ob.do(t, http.MethodGet, "/api/tags", ""), &tags)
	var names []string
	for _, m := range tags.Models {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "gpt-4o-mini,llama,qwen,qwen2.5:7b" {
		t.Fatalf("tags %v: want the LLMs and their aliases", names)
	}
	var v struct{ Version string }
	if decodeJSON(t, ob.do(t, http.MethodGet, "/api/version", ""), &v); v.Version == "" {
		t.Fatal("no version")
	}
	for _, tt := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", "/api/chat", `{"model":"nope","messages":[]}`, 404, "model 'nope' not found"},
		{"POST", "/api/show", `{"model":"sd"}`, 400, "not a language model"},
		{"POST", "/api/embed", `{"model":"llama","input":"x"}`, 400, "does not serve embeddings"},
		{"POST", "/api/chat", `{"model":"qwen","keep_alive":"soon"}`, 400, "keep_alive"},
		{"POST", "/api/pull", `{"model":"llama3"}`, 403, "managed in VramCram's config"},
		{"DELETE", "/api/delete", `{"model":"qwen"}`, 403, "managed in VramCram's config"},
		// The limits of the other doors: server.max_prompt_chars (1000 here)
		// and the sampling ranges.
		{"POST", "/api/chat", `{"model":"qwen","messages":[{"role":"user","content":"` + strings.Repeat("x", 1001) + `"}]}`, 400, "max_prompt_chars"},
		{"POST", "/api/generate", `{"model":"qwen","prompt":"` + strings.Repeat("é", 600) + `","system":"` + strings.Repeat("s", 401) + `"}`, 400, "max_prompt_chars"},
		{"POST", "/api/embeddings", `{"model":"qwen","prompt":"` + strings.Repeat("x", 1001) + `"}`, 400, "max_prompt_chars"},
		{"POST", "/api/embed", `{"model":"qwen","input":["` + strings.Repeat("x", 600) + `","` + strings.Repeat("x", 401) + `"]}`, 400, "max_prompt_chars"},
		{"POST", "/api/chat", `{"model":"qwen","messages":[{"role":"user","content":"hi"}],"options":{"temperature":7}}`, 400, "options.temperature"},
		{"POST", "/api/generate", `{"model":"qwen","prompt":"hi","options":{"top_p":"high"}}`, 400, "options.top_p"},
	} {
		rec := ob.do(t, tt.method, tt.path, tt.body)
		var e map[string]any
		decodeJSON(t, rec, &e)
		msg, _ := e["error"].(string)
		if rec.Code != tt.status || len(e) != 1 || !strings.Contains(msg, tt.msg) {
			t.Errorf("%s %s: %d %s, want %d {\"error\": …%s…}", tt.method, tt.path, rec.Code, rec.Body, tt.status, tt.msg)
		}
	}
	if rec := ob.do(t, http.MethodHead, "/", ""); rec.Code != 200 {
		t.Fatalf("HEAD /: %d", rec.Code)
	}
}
