package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2E_RealLlamaServer runs the core flow with a real llama-server and a
// GGUF model: LLAMA_SERVER=/path/to/llama-server LLAMA_MODEL=/path/to/model.gguf.
// Three model names share the file; the budget holds two of them.
func TestE2E_RealLlamaServer(t *testing.T) {
	server, model := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL")
	if server == "" || model == "" {
		t.Skip("set LLAMA_SERVER and LLAMA_MODEL to run against a real llama-server")
	}
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	port := freePort(t)
	var models strings.Builder
	for _, name := range []string{"tiny-a", "tiny-b", "tiny-c"} {
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 4000\n      config: {parallel: 2, context_size: 512, gpu_layers: 0}\n", name, model)
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 10, worker_ready_timeout_seconds: 60, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 3}
scheduling: {policy: fifo}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), server, models.String())
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, path, port)
	events := followEvents(t, d.url, map[string]int{"tiny-a": 4000, "tiny-b": 4000, "tiny-c": 4000}, 9000)
	var ids []string
	for i := range 9 {
		m := []string{"tiny-a", "tiny-b", "tiny-c"}[i%3]
		var out map[string]any
		code := d.do("POST", "/jobs", map[string]any{"model": m, "prompt": fmt.Sprintf("Once upon a time %d", i), "params": map[string]any{"max_tokens": 12, "seed": 42}}, &out)
		if code != 202 {
			t.Fatalf("submit: %d %v", code, out)
		}
		ids = append(ids, out["job_id"].(string))
	}
	start := time.Now()
	for _, id := range ids {
		js := d.waitJob(id, 120*time.Second)
		if js.Status != "completed" {
			t.Fatalf("job %s: %+v", id, js)
		}
		var res struct {
			Type, Text      string
			TokensPredicted int `json:"tokens_predicted"`
		}
		d.do("GET", "/jobs/"+id+"/result", nil, &res)
		if res.Type != "llm" || res.TokensPredicted != 12 || res.Text == "" {
			t.Fatalf("result %+v", res)
		}
		t.Logf("job %s (%s): %d tokens: %q", id, js.Model, res.TokensPredicted, res.Text)
	}
	t.Logf("9 jobs over 3 models in %v; loads %d, evictions %d", time.Since(start).Round(time.Millisecond),
		len(events.ofType("model_ready")), len(events.ofType("model_evicted")))
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(server); len(procs) != 0 {
		t.Fatalf("llama-server processes left after SIGTERM: %v", procs)
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.over) > 0 {
		t.Fatalf("ledger over budget: %v", events.over)
	}
}
