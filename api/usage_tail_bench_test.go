package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
)

// BenchmarkOpenAI_ChatProxyCountingTokens is BenchmarkOpenAI_ChatProxy with
// the answer's tail kept and read for its tokens, as the daemon does: the
// difference is the cost of counting interactive tokens.
func BenchmarkOpenAI_ChatProxyCountingTokens(b *testing.B) {
	ob := setupOpenAI(b)
	n := 0
	api.SetUsageFunc(ob.server, func(string, engine.Usage) { n++ })
	const body = `{"model":"llama","messages":[{"role":"user","content":"hello world"}],"max_tokens":8,"temperature":0.7}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		rec := httptest.NewRecorder()
		ob.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d %s", rec.Code, rec.Body)
		}
	}
}
