package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
)

// TestOpenAI_CountsRelayedTokens relays answers byte for byte and reads the
// tokens off their end: a JSON answer far longer than the kept tail with
// usage and timings last, and a stream whose last event carries timings.
func TestOpenAI_CountsRelayedTokens(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("word ", 20_000) // 100 KB of content before the figures
	jsonAnswer := fmt.Sprintf(`{"choices":[{"message":{"content":%q}}],"timings":{"cache_n":0,"prompt_n":4,"predicted_n":20000,"predicted_per_second":55.5},"usage":{"completion_tokens":20000,"prompt_tokens":4,"total_tokens":20004}}`, long)
	streamAnswer := "data: {\"choices\":[{\"delta\":{\"content\":\"echo:\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\" \\\"usage\\\": {\\\"prompt_tokens\\\": 99}\"}}]}\n\n" +
		"data: {\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{}}],\"timings\":{\"cache_n\":1,\"prompt_n\":2,\"predicted_n\":2,\"predicted_per_second\":20}}\n\n" +
		"data: [DONE]\n\n"
	eng := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, streamAnswer)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, jsonAnswer)
	}))
	defer eng.Close()
	var mu sync.Mutex
	var got []engine.Usage
	b := setupWith(t, setupOpts{server: func(s *api.Server) {
		api.SetAcquireFunc(s, func(ctx context.Context, model string, prio int) (string, context.Context, func(error), error) {
			return eng.URL, nil, func(error) {}, nil
		})
		api.SetUsageFunc(s, func(model string, u engine.Usage) {
			mu.Lock()
			got = append(got, u)
			mu.Unlock()
		})
	}})
	rec := b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`)
	if rec.Code != 200 || rec.Body.String() != jsonAnswer {
		t.Fatalf("JSON answer not relayed as is: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	rec = b.do(t, http.MethodPost, "/v1/chat/completions", `{"model":"llama","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if rec.Code != 200 || rec.Body.String() != streamAnswer {
		t.Fatalf("stream not relayed as is: %d %q", rec.Code, rec.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []engine.Usage{
		{PromptTokens: 4, CompletionTokens: 20000, TokensPerSecond: 55.5},
		{PromptTokens: 3, CompletionTokens: 2, TokensPerSecond: 20},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("usage recorded %+v, want %+v", got, want)
	}
}
