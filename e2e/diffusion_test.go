package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The diffusion end-to-end tests run the stand-in engine as sd-cli and
// sd-server (symlinks named so; the stand-in picks its role by name) beside
// LLMs, under a budget where no two models fit at once.

type sdSetup struct {
	e2eSetup
	sdCLI, sdServer string
	engines         []string // binaries whose processes count against the budget
}

// writeDiffusionConfig writes a config with one LLM and several diffusion
// models, each reserving more than half of the 9000 MiB budget.
func writeDiffusionConfig(t *testing.T, engine string) sdSetup {
	t.Helper()
	dir := t.TempDir()
	s := sdSetup{sdCLI: filepath.Join(dir, "sd-cli"), sdServer: filepath.Join(dir, "sd-server")}
	for _, link := range []string{s.sdCLI, s.sdServer} {
		if err := os.Symlink(engine, link); err != nil {
			t.Fatal(err)
		}
	}
	s.engines = []string{engine, s.sdCLI, s.sdServer}
	file := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	s.sizes = map[string]int{"alpha": 5000, "sd": 6000, "sdsrv": 6000, "slow": 6000, "broken": 6000}
	s.port = freePort(t)
	s.budget = 9000
	s.dir = dir
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s, sd_path: %s, sd_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 3}
logging: {level: debug, format: json}
models:
  llm:
    - {name: alpha, model_path: %s, vram_mb: 5000, config: {parallel: 2, context_size: 512, extra_args: [--test-load-delay, 30ms, --test-token-delay, 2ms]}}
  diffusion:
    - {name: sd, model_path: %s, vram_mb: 6000, config: {engine: sd-cli, width: 64, height: 64, steps: 4, cfg_scale: 1, extra_args: [--test-load-delay, 20ms, --test-step-delay, 5ms]}}
    - {name: sdsrv, model_path: %s, vram_mb: 6000, config: {engine: sd-server, width: 64, height: 64, steps: 3, extra_args: [--test-load-delay, 30ms, --test-step-delay, 5ms]}}
    - {name: slow, model_path: %s, vram_mb: 6000, config: {steps: 150, width: 64, height: 64, extra_args: [--test-step-delay, 200ms, --test-fork-grandchild]}}
    - {name: broken, model_path: %s, vram_mb: 6000, config: {width: 64, height: 64, extra_args: [--test-fail-load]}}
`, s.port, filepath.Join(dir, "data"), engine, s.sdCLI, s.sdServer,
		file("alpha.gguf"), file("sd.safetensors"), file("sdsrv.safetensors"), file("slow.safetensors"), file("broken.safetensors"))
	s.cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// sdProcs lists live processes of the binaries (pid → model name, from the
// base name of -m without its extension).
func sdProcs(bins []string) map[int]string {
	out := map[int]string{}
	for _, bin := range bins {
		for pid, file := range engineProcs(bin) {
			out[pid] = strings.TrimSuffix(file, filepath.Ext(file))
		}
	}
	return out
}

// sampleSD watches, until stop, which engine processes are alive and checks
// that those alive at the same moment never hold more than the budget. A
// scan of /proc is not a snapshot (one process may exit and another start
// while it runs), so each process is known alive only from its first to its
// last sighting, each timed when it was read; overlaps of those intervals
// are certain, and those are what is checked.
func sampleSD(bins []string, sizes map[string]int, budget int) (stop func() (peak int, over []string)) {
	quit := make(chan struct{})
	type sighting struct {
		model       string
		first, last time.Time
	}
	seen := map[int]*sighting{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, bin := range bins {
				for pid, file := range engineProcs(bin) {
					now := time.Now()
					if x := seen[pid]; x != nil {
						x.last = now
					} else {
						seen[pid] = &sighting{strings.TrimSuffix(file, filepath.Ext(file)), now, now}
					}
				}
			}
			select {
			case <-quit:
				return
			case <-time.After(3 * time.Millisecond):
			}
		}
	}()
	return func() (int, []string) {
		close(quit)
		<-done
		type edge struct {
			at   time.Time
			mb   int
			what string
		}
		var edges []edge
		for pid, x := range seen {
			what := fmt.Sprintf("%s (pid %d)", x.model, pid)
			edges = append(edges, edge{x.first, sizes[x.model], what}, edge{x.last, -sizes[x.model], what})
		}
		sort.Slice(edges, func(i, j int) bool {
			if !edges[i].at.Equal(edges[j].at) {
				return edges[i].at.Before(edges[j].at)
			}
			return edges[i].mb > edges[j].mb // a start before an end at the same instant
		})
		peak, sum := 0, 0
		var over []string
		for _, e := range edges {
			sum += e.mb
			peak = max(peak, sum)
			if sum > budget {
				over = append(over, fmt.Sprintf("%d MiB of engines alive after %s started > budget %d", sum, e.what, budget))
			}
		}
		return peak, over
	}
}

func (d *daemon) submitParams(model, prompt string, params map[string]any) string {
	d.t.Helper()
	var out map[string]any
	code := d.do("POST", "/jobs", map[string]any{"model": model, "prompt": prompt, "params": params}, &out)
	if code != http.StatusAccepted {
		d.t.Fatalf("submit %s: %d %v", model, code, out)
	}
	return out["job_id"].(string)
}

// get fetches path with an Accept header and returns status, content type
// and body.
func (d *daemon) get(path, accept string) (int, string, []byte) {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.url+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG (%d bytes): %v", len(b), err)
	}
	return img
}

// checkImages checks a completed diffusion job through all three routes
// and returns the first image.
func (d *daemon) checkImages(id string, n, w, h int) []byte {
	d.t.Helper()
	var res struct {
		Type          string
		Seed          *int64
		Width, Height int
		Images        []struct{ Format, B64, URL string }
	}
	if code := d.do("GET", "/jobs/"+id+"/result", nil, &res); code != 200 || res.Type != "diffusion" || len(res.Images) != n ||
		res.Seed == nil || res.Width != w || res.Height != h {
		d.t.Fatalf("result of %s: %d %+v", id, code, res)
	}
	var first []byte
	for i, im := range res.Images {
		b, err := base64.StdEncoding.DecodeString(im.B64)
		if err != nil {
			d.t.Fatal(err)
		}
		if s := decodePNG(d.t, b).Bounds().Size(); s.X != w || s.Y != h || im.Format != "png" {
			d.t.Fatalf("image %d of %s: %v %s", i, id, s, im.Format)
		}
		code, ct, raw := d.get(im.URL, "")
		if code != 200 || ct != "image/png" || !bytes.Equal(raw, b) {
			d.t.Fatalf("GET %s: %d %s, same bytes %v", im.URL, code, ct, bytes.Equal(raw, b))
		}
		if i == 0 {
			first = b
		}
	}
	code, ct, raw := d.get("/jobs/"+id+"/result", "image/png")
	if code != 200 || ct != "image/png" || !bytes.Equal(raw, first) {
		d.t.Fatalf("result as image/png: %d %s", code, ct)
	}
	return first
}

func TestE2E_DiffusionAndLLMShareTheBudget(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeDiffusionConfig(t, engine)
	stopSampling := sampleSD(s.engines, s.sizes, s.budget)
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, s.sizes, s.budget)

	type job struct{ id, model, prompt string }
	submit := func(i int) job {
		switch i % 3 {
		case 0:
			p := fmt.Sprintf("llm job %d", i)
			return job{d.submit("alpha", p), "alpha", p}
		case 1:
			p := fmt.Sprintf("a painting number %d", i)
			return job{d.submitParams("sd", p, map[string]any{"count": 2, "width": 96, "seed": i}), "sd", p}
		}
		p := fmt.Sprintf("a photo number %d", i)
		return job{d.submitParams("sdsrv", p, map[string]any{"height": 128, "negative_prompt": "blur"}), "sdsrv", p}
	}
	check := func(j job) {
		t.Helper()
		if js := d.waitJob(j.id, 60*time.Second); js.Status != "completed" {
			t.Fatalf("%s job: %+v", j.model, js)
		}
		switch j.model {
		case "alpha":
			if got := d.resultText(j.id); got != "echo: "+j.prompt {
				t.Fatalf("text %q", got)
			}
		case "sd":
			d.checkImages(j.id, 2, 96, 64)
		case "sdsrv":
			d.checkImages(j.id, 1, 64, 128)
		}
	}

	// One model after another: every swap needs an eviction, since no two
	// of these models fit together.
	const sequential = 6
	for i := range sequential {
		check(submit(i))
	}
	if ev := events.ofType("model_evicted"); len(ev) != sequential-1 {
		t.Fatalf("%d evictions for %d alternating jobs, want %d", len(ev), sequential, sequential-1)
	}
	// Then a burst of mixed jobs.
	var burst []job
	for i := range 12 {
		burst = append(burst, submit(i))
	}
	for _, j := range burst {
		check(j)
	}
	// sd-cli's sampling steps were published as progress: 4 steps × 2 images.
	sawSteps := false
	for _, ev := range events.ofType("job_progress") {
		if ev["model"] == "sd" && ev["step"] == float64(8) && ev["steps"] == float64(8) {
			sawSteps = true
		}
	}
	if !sawSteps {
		t.Fatal("no job_progress event with step 8 of 8 for the sd-cli jobs")
	}
	var health map[string]any
	if code := d.do("GET", "/health", nil, &health); code != 200 || health["vram_reserved_mb"].(float64) > float64(s.budget) {
		t.Fatalf("health %d %v", code, health)
	}

	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := sdProcs(s.engines); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
	requireWithinBudget(t, stopSampling, events)
}

func TestE2E_DiffusionCancelAndFailure(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeDiffusionConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)

	// Cancel kills a running sd-cli (and the grandchild it forked).
	id := d.submit("slow", "a very slow picture")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var js struct {
			Status   string
			Progress *struct{ Step, Steps int }
		}
		d.do("GET", "/jobs/"+id, nil, &js)
		if js.Status == "running" && js.Progress != nil && js.Progress.Step >= 1 {
			if js.Progress.Steps != 150 {
				t.Fatalf("progress %+v", js.Progress)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow job never showed progress: %+v", js)
		}
		time.Sleep(10 * time.Millisecond)
	}
	running := sdProcs([]string{s.sdCLI, engine})
	if len(running) != 2 { // sd-cli and its grandchild (a copy of the stand-in)
		t.Fatalf("processes while running: %v", running)
	}
	var models struct{ Models []map[string]any }
	d.do("GET", "/models", nil, &models)
	for _, m := range models.Models {
		if m["name"] == "slow" {
			if pid, ok := m["pid"].(float64); !ok || running[int(pid)] != "slow" {
				t.Fatalf("/models pid of slow: %v; processes %v", m["pid"], running)
			}
		}
	}
	var cancelled map[string]any
	if code := d.do("DELETE", "/jobs/"+id, nil, &cancelled); code != 200 || cancelled["previous_status"] != "running" {
		t.Fatalf("cancel: %d %v", code, cancelled)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(sdProcs([]string{s.sdCLI, engine})) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes left after cancel: %v", sdProcs([]string{s.sdCLI, engine}))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if js := d.waitJob(id, 10*time.Second); js.Status != "cancelled" {
		t.Fatalf("cancelled job: %+v", js)
	}
	// The job is cancelled in the store at once; its run cleans up as it ends.
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(s.dir, "data", "images", id))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("images of the cancelled job still there: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A failing sd-cli job reports the engine's own error, without retries.
	id = d.submit("broken", "anything")
	js := d.waitJob(id, 30*time.Second)
	if js.Status != "failed" || js.Attempts != 1 || !strings.Contains(js.Error, "unknown format") ||
		!strings.Contains(js.Error, "exited with code 1") {
		t.Fatalf("broken job: %+v", js)
	}
	var errBody struct {
		Error struct{ Code, Message string }
	}
	if code := d.do("GET", "/jobs/"+id+"/result", nil, &errBody); code != 409 || !strings.Contains(errBody.Error.Message, "unknown format") {
		t.Fatalf("result of failed job: %d %+v", code, errBody)
	}

	// Bad params are refused at submit time, naming the field.
	code := d.do("POST", "/jobs", map[string]any{"model": "sd", "prompt": "x", "params": map[string]any{"width": 100}}, &errBody)
	if code != 400 || !strings.HasPrefix(errBody.Error.Message, "params.width: ") {
		t.Fatalf("bad width: %d %+v", code, errBody)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
}

func TestE2E_OpenAIImagesGenerations(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeDiffusionConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	for _, model := range []string{"sdsrv", "sd"} {
		body, _ := json.Marshal(map[string]any{"model": model, "prompt": "a lighthouse at dusk", "n": 2, "size": "128x64", "seed": 3})
		resp, err := http.Post(d.url+"/v1/images/generations", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Created int64
			Data    []struct {
				B64JSON string `json:"b64_json"`
			}
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != 200 || len(out.Data) != 2 || out.Created == 0 {
			t.Fatalf("%s: %d %.300s (%v)", model, resp.StatusCode, raw, err)
		}
		for _, im := range out.Data {
			b, err := base64.StdEncoding.DecodeString(im.B64JSON)
			if err != nil {
				t.Fatal(err)
			}
			if sz := decodePNG(t, b).Bounds().Size(); sz.X != 128 || sz.Y != 64 {
				t.Fatalf("%s: image %v", model, sz)
			}
		}
		id := resp.Header.Get("X-Job-Id")
		if js := d.waitJob(id, time.Second); js.Status != "completed" || js.Model != model {
			t.Fatalf("job %s: %+v", id, js)
		}
	}
	resp, err := http.Post(d.url+"/v1/images/generations", "application/json", strings.NewReader(`{"model":"alpha","prompt":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 400 || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "not an image model") {
		t.Fatalf("LLM model: %d %+v", resp.StatusCode, e)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := sdProcs(s.engines); len(procs) != 0 {
		t.Fatalf("engines left: %v", procs)
	}
}
