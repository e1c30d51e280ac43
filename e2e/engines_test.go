package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
		oaiModel{name: "broken", parallel: 1, extra: []string{"--test-token-delay", "150ms", "--test-stream-error-after", "2"}}) // attempts of 300 ms: the stream attaches before the first fails
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

// stable-diffusion.cpp's input end to end on the stand-in: sampler and
// scheduler names are checked at submit; a 100,000-character prompt runs
// (through --prompt-file); an sd-cli argument error fails the job at once
// with the engine's error line, not its usage text.
func TestE2E_DiffusionEngineInput(t *testing.T) {
	bin, engine := buildBinaries(t)
	dir := t.TempDir()
	sdCLI := filepath.Join(dir, "sd-cli")
	if err := os.Symlink(engine, sdCLI); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "sd.safetensors")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s, sd_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 3}
models:
  diffusion:
    - {name: sd, model_path: %s, vram_mb: 4000, config: {width: 64, height: 64, steps: 2}}
    - {name: badarg, model_path: %s, vram_mb: 4000, config: {width: 64, height: 64, steps: 2, extra_args: [--no-such-flag]}}
`, port, filepath.Join(dir, "data"), engine, sdCLI, model, model)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startOAIDaemon(t, bin, e2eSetup{dir: dir, cfg: path, port: port})

	t.Run("UnknownSamplerIs400", func(t *testing.T) {
		var out map[string]any
		code := d.do("POST", "/jobs", map[string]any{"model": "sd", "prompt": "a cat", "params": map[string]any{"sampling_method": "euler_x"}}, &out)
		if code != 400 || !strings.Contains(fmt.Sprint(out), "params.sampling_method") {
			t.Fatalf("POST /jobs: %d %v; want 400 naming params.sampling_method", code, out)
		}
		code = d.do("POST", "/v1/images/generations", map[string]any{"model": "sd", "prompt": "a cat", "scheduler": "bogus"}, &out)
		if code != 400 || !strings.Contains(fmt.Sprint(out), "scheduler") {
			t.Fatalf("POST /v1/images/generations: %d %v; want 400 naming the scheduler", code, out)
		}
	})

	t.Run("LongPromptRuns", func(t *testing.T) {
		id := d.submit("sd", strings.Repeat("é", 100_000)) // 200 KB: more than one argv word may hold
		if js := d.waitJob(id, 60*time.Second); js.Status != "completed" {
			t.Fatalf("job %+v", js)
		}
	})

	t.Run("ArgumentErrorFailsOnce", func(t *testing.T) {
		js := d.waitJob(d.submit("badarg", "a cat"), 60*time.Second)
		if js.Status != "failed" || js.Attempts != 1 || !strings.Contains(js.Error, "error: unknown argument: --no-such-flag") {
			t.Fatalf("job %+v; want failed once with the engine's error line", js)
		}
		if strings.Contains(js.Error, "--option-") || strings.Contains(js.Error, "Usage") {
			t.Fatalf("stored error is usage text: %s", js.Error)
		}
	})
}
