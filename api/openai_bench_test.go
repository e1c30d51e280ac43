package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkOpenAI_ChatProxy is one non-streaming chat request through the
// handler (checks, slot, pooled engine call, relay) to an in-process engine:
// allocations per request are the figure to watch.
func BenchmarkOpenAI_ChatProxy(b *testing.B) {
	ob := setupOpenAI(b)
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
