package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/scheduler"
)

// The scripts in scripts/ run against a server as a user would run them.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: script not run", tool)
		}
	}
}

// runScript runs a script with env added to a clean environment and returns
// its combined output; it fails the test on a non-zero exit.
func runScript(t *testing.T, script string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	// The binaries are built with -race, whose runtime sleeps 1 s at exit
	// unless told otherwise; the scripts run it a dozen times.
	cmd.Env = append(append(cleanEnv(), "GORACE=atexit_sleep_ms=0"), env...)
	cmd.Dir = t.TempDir()
	abs, _ := filepath.Abs(script)
	cmd.Args[1] = abs
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s still running after 2 minutes:\n%s", script, out.String())
	}
	return out.String()
}

func TestE2E_Scripts(t *testing.T) {
	needTools(t, "bash", "curl")
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)
	env := []string{envURL + "=" + d.url, "VRAMCRAM=" + bin}

	t.Run("Smoke", func(t *testing.T) {
		out := runScript(t, "scripts/smoke.sh", env)
		if strings.Count(out, "PASS  ") != 6 || !strings.HasSuffix(out, "smoke test passed\n") || strings.Contains(out, "FAIL") {
			t.Fatalf("smoke.sh output:\n%s", out)
		}
	})
	t.Run("SmokeFailsWithoutServer", func(t *testing.T) {
		cmd := exec.Command("bash", "scripts/smoke.sh")
		cmd.Env = append(cleanEnv(), envURL+"=http://127.0.0.1:1", "VRAMCRAM="+bin)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "FAIL  health: GET http://127.0.0.1:1/health: server not reachable") {
			t.Fatalf("smoke.sh without a server: %v\n%s", err, out)
		}
	})
	t.Run("APIDemo", func(t *testing.T) {
		out := runScript(t, "scripts/api-demo.sh", env, "beta")
		for _, want := range []string{"HTTP 202", `"text"`, "echo: Name three colours.", `"type":"job_progress"`,
			"unknown_model", "params.temperature", "already_finished", "api demo done"} {
			if !strings.Contains(out, want) {
				t.Errorf("api-demo.sh output lacks %q:\n%s", want, out)
			}
		}
	})
}

// scriptFake is a server with an LLM and a diffusion model, enough for
// llm-to-image.sh until the stand-in engine draws images: the LLM answers
// llmText token by token, the diffusion model reports steps and returns
// image, and the prompt it got is recorded.
type scriptFake struct {
	llmText     string
	image       []byte
	mu          sync.Mutex
	subs        []chan scheduler.Event
	jobs        map[string]map[string]any // id → request body
	imagePrompt string
}

func (f *scriptFake) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"models": []map[string]any{
			{"name": "broken", "type": "llm", "state": "unavailable"},
			{"name": "writer", "type": "llm", "state": "ready", "vram_mb": 4000},
			{"name": "painter", "type": "diffusion", "state": "unloaded", "vram_mb": 6000},
		}})
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan scheduler.Event, 64)
		f.mu.Lock()
		f.subs = append(f.subs, ch)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": connected\n\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case ev := <-ch:
				b, _ := json.Marshal(ev)
				fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, b)
				w.(http.Flusher).Flush()
			}
		}
	})
	mux.HandleFunc("POST /jobs", f.submit)
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		body, ok := f.jobs[r.PathValue("id")]
		f.mu.Unlock()
		if !ok {
			writeJSON(w, 404, map[string]any{"error": map[string]string{"code": "not_found", "message": "no job"}})
			return
		}
		now := time.Now().UTC()
		writeJSON(w, 200, map[string]any{"job_id": r.PathValue("id"), "status": "completed", "model": body["model"],
			"created_at": now, "started_at": now, "finished_at": now, "attempts": 1, "max_attempts": 3})
	})
	mux.HandleFunc("GET /jobs/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "job00000000000writer" {
			writeJSON(w, 200, map[string]any{"type": "llm", "text": f.llmText})
			return
		}
		writeJSON(w, 200, diffusionResult(f.image))
	})
	return mux
}

func (f *scriptFake) submit(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	model, _ := body["model"].(string)
	id := fmt.Sprintf("job%017s", model)
	var evs []scheduler.Event
	switch model {
	case "writer":
		evs = append(evs, scheduler.Event{Type: scheduler.EvJobStarted, Model: model, JobID: id})
		for i, word := range strings.SplitAfter(f.llmText, " ") {
			evs = append(evs, scheduler.Event{Type: scheduler.EvJobProgress, Model: model, JobID: id, Tokens: i + 1, Chunk: word})
		}
	case "painter":
		f.mu.Lock()
		f.imagePrompt, _ = body["prompt"].(string)
		f.mu.Unlock()
		evs = append(evs,
			scheduler.Event{Type: scheduler.EvModelEvicted, Model: "writer", Reason: "evicted for painter"},
			scheduler.Event{Type: scheduler.EvModelLoading, Model: model, VRAMMB: 6000},
			scheduler.Event{Type: scheduler.EvModelReady, Model: model, Seconds: 2.5},
			scheduler.Event{Type: scheduler.EvJobStarted, Model: model, JobID: id},
			scheduler.Event{Type: scheduler.EvJobProgress, Model: model, JobID: id, Step: 1, Steps: 2},
			scheduler.Event{Type: scheduler.EvJobProgress, Model: model, JobID: id, Step: 2, Steps: 2})
	default:
		writeJSON(w, 404, map[string]any{"error": map[string]string{"code": "unknown_model", "message": "model: unknown"}})
		return
	}
	evs = append(evs, scheduler.Event{Type: scheduler.EvJobFinished, Model: model, JobID: id, State: "completed"})
	f.mu.Lock()
	f.jobs[id] = body
	for _, ch := range f.subs {
		for _, ev := range evs {
			ch <- ev
		}
	}
	f.mu.Unlock()
	writeJSON(w, 202, map[string]string{"job_id": id, "status": "queued"})
}

func TestScripts_LLMToImage(t *testing.T) {
	needTools(t, "bash")
	bin, _ := buildBinaries(t)
	f := &scriptFake{
		llmText: `"A white lighthouse on a black cliff, dusk sky in violet and orange."` + "\n",
		image:   testPNG(t, color.RGBA{200, 100, 0, 255}),
		jobs:    map[string]map[string]any{},
	}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "lighthouse.png")
	text := runScript(t, "scripts/llm-to-image.sh", []string{envURL + "=" + srv.URL, "VRAMCRAM=" + bin, "OUT=" + out},
		"a lighthouse")
	if want := "A white lighthouse on a black cliff, dusk sky in violet and orange."; f.imagePrompt != want {
		t.Errorf("the diffusion model was asked to draw %q, want %q", f.imagePrompt, want)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(b, f.image) {
		t.Fatalf("image file: %v (%d bytes)", err, len(b))
	}
	for _, want := range []string{"== 1/2  writer writes an image prompt about: a lighthouse", "running on writer",
		"== 2/2  painter draws it", "evicting writer to make room for painter", "loading model painter (6000 MiB reserved)",
		"step 1/2\nstep 2/2", "image:  " + out + " (" + fmt.Sprint(len(f.image)) + " bytes)"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}
