package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzOpenAIChat posts random bodies to POST /v1/chat/completions. Whatever
// the body, the server must not panic or answer 5xx; every refusal has the
// OpenAI error shape; and only a body that is a JSON object naming a
// configured LLM with a non-empty messages array reaches the engine, which
// then gets it byte for byte.
func FuzzOpenAIChat(f *testing.F) {
	for _, seed := range []string{
		`{"model":"llama","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"qwen","messages":[{"role":"system","content":null},{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true,"max_tokens":3,"temperature":0.5,"top_p":1,"n":1}`,
		`{"model":"sd","messages":[{"role":"user","content":"x"}]}`,
		`{"model":"llama","messages":[]}`,
		`{"model":"llama","messages":[{"content":"x"}]}`,
		`{"model":"llama","messages":[{"role":"user","content":{}}]}`,
		`{"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":-1}`,
		`{"model":"llama","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`,
		`{"model":"llama","messages":[{"role":"user","content":"x"}]}{}`,
		`{"model":"../x","messages":[{"role":"user","content":"x"}]}`,
		`[]`, `null`, `""`, ``, `{`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	b := setupOpenAI(f)

	f.Fuzz(func(t *testing.T, body []byte) {
		before := len(b.eng.recorded())
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		b.handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
		calls := b.eng.recorded()
		if rec.Code != http.StatusOK {
			var e struct {
				Error struct {
					Message, Type string
					Code          string
				}
			}
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Code == "" {
				t.Fatalf("status %d: not an OpenAI error: %s", rec.Code, rec.Body)
			}
			if len(calls) != before {
				t.Fatalf("refused body %q reached the engine", body)
			}
			return
		}
		if len(calls) != before+1 || calls[before].body != string(body) {
			t.Fatalf("accepted body %q: engine got %v", body, calls[before:])
		}
		var req2 struct {
			Model    string
			Messages []json.RawMessage
		}
		if err := json.Unmarshal(body, &req2); err != nil || (req2.Model != "llama" && req2.Model != "qwen") || len(req2.Messages) == 0 {
			t.Fatalf("accepted a body that is not a chat request for a configured LLM: %q", body)
		}
	})
}
