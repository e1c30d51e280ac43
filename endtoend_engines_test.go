package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The stand-in's llama-server failures (issue 16) seen end to end: a
// prompt over the per-slot context is refused by the engine and the job
// fails once; an error in the middle of the engine's stream reaches the job
// stream and the OpenAI stream, and the job is retried as an engine failure.
func TestE2E_EngineRefusalsAndMidStreamErrors(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeOAIConfig(t, engine, 9000, nil,
		oaiModel{name: "tight", parallel: 2}, // context_size 512 / 2 slots = 256 tokens per slot
		oaiModel{name: "broken", parallel: 1, extra: []string{"--test-token-delay", "30ms", "--test-stream-error-after", "2"}})
	d := startOAIDaemon(t, bin, s)

	t.Run("ContextOverflowFailsOnce", func(t *testing.T) {
		id := d.submit("tight", strings.TrimSpace(strings.Repeat("word ", 300)))
		js := d.waitJob(id, 60*time.Second)
		if js.Status != "failed" || js.Attempts != 1 || !strings.Contains(js.Error, "exceed_context_size_error") {
			t.Fatalf("job %+v; want failed once with exceed_context_size_error", js)
		}
		// A prompt that fits runs.
		if js := d.waitJob(d.submit("tight", "hello world"), 60*time.Second); js.Status != "completed" {
			t.Fatalf("short prompt: %+v", js)
		}
	})

	t.Run("MidStreamErrorInJobStream", func(t *testing.T) {
		id := d.submit("broken", "one two three four")
		resp, err := http.Get(d.url + "/jobs/" + id + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		var errs []string
		var done jobStreamMsg
		for done.Type != "done" {
			m := jobMsg(t, r)
			switch m.Type {
			case "error":
				errs = append(errs, m.Error)
			case "done":
				done = m
			}
		}
		if len(errs) == 0 || !strings.Contains(errs[0], "does not match the expected") {
			t.Fatalf("error events %q; want the engine's mid-stream error", errs)
		}
		js := d.waitJob(id, 10*time.Second)
		// An engine failure, not a refusal: retried up to max_attempts (3).
		if done.Status != "failed" || js.Attempts != 3 || !strings.Contains(js.Error, "does not match the expected") {
			t.Fatalf("done %+v, job %+v; want failed after 3 attempts with the engine's message", done, js)
		}
	})

	t.Run("MidStreamErrorInOpenAIStream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		resp := d.post(ctx, "/v1/chat/completions", `{"model":"broken","stream":true,"messages":[{"role":"user","content":"one two three four"}]}`)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		if resp.StatusCode != 200 || !strings.Contains(body, `data: {"error":{`) || !strings.Contains(body, "does not match the expected") {
			t.Fatalf("%d %s; want the engine's error event", resp.StatusCode, body)
		}
		if strings.Contains(body, "[DONE]") {
			t.Fatalf("stream ended with [DONE] after an error: %s", body)
		}
	})
}
