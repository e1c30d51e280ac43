package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

// BenchmarkSubmitHandler is POST /jobs through the handler into a real
// store (fsync off, so the figure is CPU: decode, checks, the commit's
// bbolt work, the answer) from 32 goroutines per CPU, which share commits
// as HTTP clients do. Allocations per job are the figure to watch; the
// daemon end to end is BenchmarkSubmit in the root package.
func BenchmarkSubmitHandler(b *testing.B) {
	tb := setupWith(b, setupOpts{config: func(c *api.Config) { c.MaxPromptChars = 1000 }})
	body := `{"model":"llama","prompt":"` + strings.Repeat("Write a haiku about GPUs. ", 8) + `"}`
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/jobs", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			tb.handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Fatalf("status %d %s", rec.Code, rec.Body)
			}
		}
	})
}
