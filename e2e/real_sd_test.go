package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestE2E_RealStableDiffusion runs diffusion jobs through VramCram on the
// real stable-diffusion.cpp programs: SD_CLI=/path/to/sd-cli
// SD_SERVER=/path/to/sd-server SD_MODEL=/path/to/model (any checkpoint that
// loads; zero weights will do, the images are then flat). One model runs
// through sd-cli (a process per job), one through sd-server (supervised),
// and the budget holds one at a time, so each job evicts the other.
func TestE2E_RealStableDiffusion(t *testing.T) {
	cli, server, model := os.Getenv("SD_CLI"), os.Getenv("SD_SERVER"), os.Getenv("SD_MODEL")
	if cli == "" || server == "" || model == "" {
		t.Skip("set SD_CLI, SD_SERVER and SD_MODEL to run against the real stable-diffusion.cpp")
	}
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 6000, safety_margin_mb: 1000}
inference: {sd_path: %s, sd_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 60, worker_ready_timeout_seconds: 120, graceful_shutdown_timeout_seconds: 30, stop_grace_seconds: 3}
scheduling: {policy: fifo, max_attempts: 1}
logging: {level: debug, format: json}
models:
  diffusion:
    - {name: sd-cli-model, model_path: %s, vram_mb: 4000, config: {engine: sd-cli, width: 64, height: 64, steps: 1, cfg_scale: 1}}
    - {name: sd-server-model, model_path: %s, vram_mb: 4000, config: {engine: sd-server, width: 64, height: 64, steps: 1, cfg_scale: 1}}
`, port, filepath.Join(dir, "data"), cli, server, model, model)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, path, port)

	checkPNG := func(what string, b []byte) {
		t.Helper()
		c, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil || c.Width != 64 || c.Height != 64 {
			t.Fatalf("%s: %v %+v; want a 64x64 PNG", what, err, c)
		}
	}
	// Prompt jobs, alternating: each evicts the other model.
	for i, m := range []string{"sd-cli-model", "sd-server-model", "sd-cli-model"} {
		id := d.submit(m, fmt.Sprintf("a red fox %d", i))
		if js := d.waitJob(id, 180*time.Second); js.Status != "completed" {
			t.Fatalf("%s job %s: %+v", m, id, js)
		}
		req, _ := http.NewRequest("GET", d.url+"/jobs/"+id+"/images/0", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var img bytes.Buffer
		_, _ = img.ReadFrom(resp.Body)
		resp.Body.Close()
		checkPNG(m+" image", img.Bytes())
	}
	// OpenAI's route on the supervised server.
	var out struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
		} `json:"data"`
	}
	code := d.do("POST", "/v1/images/generations", map[string]any{"model": "sd-server-model", "prompt": "a blue bird", "n": 1, "size": "64x64"}, &out)
	if code != http.StatusOK || len(out.Data) != 1 {
		t.Fatalf("POST /v1/images/generations: %d %+v", code, out)
	}
	b, err := base64.StdEncoding.DecodeString(out.Data[0].B64JSON)
	if err != nil {
		t.Fatal(err)
	}
	checkPNG("/v1/images/generations", b)
	// A bad parameter is refused at submit (the engine would abort on it).
	var e map[string]any
	if code := d.do("POST", "/jobs", map[string]any{"model": "sd-cli-model", "prompt": "x", "params": map[string]any{"sampling_method": "no-such"}}, &e); code != http.StatusBadRequest {
		t.Fatalf("unknown sampler: %d %v; want 400", code, e)
	}
	d.signal(syscall.SIGTERM, 60*time.Second)
	for _, b := range []string{cli, server} {
		if procs := engineProcs(b); len(procs) != 0 {
			t.Fatalf("%s processes left after SIGTERM: %v", b, procs)
		}
	}
}
