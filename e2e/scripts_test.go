package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api/wire/wiretest"
	"github.com/vramcram/vramcram/cli"
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
	out, err := execScript(t, script, env, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

// execScript runs a script as runScript does and returns its combined
// output and how it exited.
func execScript(t *testing.T, script string, env []string, args ...string) (string, error) {
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
		return out.String(), err
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s still running after 2 minutes:\n%s", script, out.String())
	}
	return "", nil
}

func TestE2E_Scripts(t *testing.T) {
	needTools(t, "bash", "curl")
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)
	env := []string{cli.EnvURL + "=" + d.url, "VRAMCRAM=" + bin}

	t.Run("Smoke", func(t *testing.T) {
		out := runScript(t, "scripts/smoke.sh", env)
		if strings.Count(out, "PASS  ") != 6 || !strings.HasSuffix(out, "smoke test passed\n") || strings.Contains(out, "FAIL") {
			t.Fatalf("smoke.sh output:\n%s", out)
		}
	})
	t.Run("SmokeFailsWithoutServer", func(t *testing.T) {
		cmd := exec.Command("bash", "scripts/smoke.sh")
		cmd.Env = append(cleanEnv(), cli.EnvURL+"=http://127.0.0.1:1", "VRAMCRAM="+bin)
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
// llm-to-image.sh: the LLM answers llmText token by token, the diffusion
// model reports steps and returns image, and the prompt it got is recorded.
// Its LLM answers in quotes, which the script must strip (the stand-in
// engine of TestScripts_LLMToImageAgainstDaemon never quotes).
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
		wiretest.WriteJSON(w, 200, map[string]any{"models": []map[string]any{
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
		wiretest.ServeEvents(w, r, ch)
	})
	mux.HandleFunc("POST /jobs", f.submit)
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		body, ok := f.jobs[r.PathValue("id")]
		f.mu.Unlock()
		if !ok {
			wiretest.WriteJSON(w, 404, map[string]any{"error": map[string]string{"code": "not_found", "message": "no job"}})
			return
		}
		now := time.Now().UTC()
		wiretest.WriteJSON(w, 200, map[string]any{"job_id": r.PathValue("id"), "status": "completed", "model": body["model"],
			"created_at": now, "started_at": now, "finished_at": now, "attempts": 1, "max_attempts": 3})
	})
	mux.HandleFunc("GET /jobs/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "job00000000000writer" {
			wiretest.WriteJSON(w, 200, map[string]any{"type": "llm", "text": f.llmText})
			return
		}
		wiretest.WriteJSON(w, 200, wiretest.DiffusionResult(f.image))
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
		wiretest.WriteJSON(w, 404, map[string]any{"error": map[string]string{"code": "unknown_model", "message": "model: unknown"}})
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
	wiretest.WriteJSON(w, 202, map[string]string{"job_id": id, "status": "queued"})
}

func TestScripts_LLMToImage(t *testing.T) {
	needTools(t, "bash")
	bin, _ := buildBinaries(t)
	f := &scriptFake{
		llmText: `"A white lighthouse on a black cliff, dusk sky in violet and orange."` + "\n",
		image:   wiretest.PNG(t, color.RGBA{200, 100, 0, 255}),
		jobs:    map[string]map[string]any{},
	}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "lighthouse.png")
	text := runScript(t, "scripts/llm-to-image.sh", []string{cli.EnvURL + "=" + srv.URL, "VRAMCRAM=" + bin, "OUT=" + out},
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

// TestScripts_LLMToImageAgainstDaemon runs llm-to-image.sh against the built
// daemon. The stand-in engine plays llama-server for the LLM and sd-cli or
// sd-server for the diffusion models; no two models fit in VRAM together, so
// each image job evicts the LLM that wrote its prompt.
func TestScripts_LLMToImageAgainstDaemon(t *testing.T) {
	needTools(t, "bash")
	bin, engine := buildBinaries(t)
	s := writeDiffusionConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)
	const script = "scripts/llm-to-image.sh"
	env := []string{cli.EnvURL + "=" + d.url, "VRAMCRAM=" + bin}
	// The stand-in LLM answers "echo: " and the words of the script's request.
	const asked = "echo: Describe, in one vivid sentence of at most 60 words, a picture of %s. Reply with the sentence only."

	// Default models: the first usable LLM (alpha) and diffusion model
	// (sd, an sd-cli model of 4 steps).
	out := filepath.Join(t.TempDir(), "lighthouse.png")
	text := runScript(t, script, append(env, "OUT="+out), "a lighthouse")
	checkLLMToImage(t, d, text, out, fmt.Sprintf(asked, "a lighthouse"), "alpha", "sd", 4)

	// Chosen models and a token limit: sdsrv is an sd-server model, which
	// publishes no steps; five tokens of the answer make the prompt.
	out = filepath.Join(t.TempDir(), "fox.png")
	text = runScript(t, script, append(env, "OUT="+out, "LLM_MODEL=alpha", "IMAGE_MODEL=sdsrv", "MAX_TOKENS=5"), "a fox")
	checkLLMToImage(t, d, text, out, "echo: Describe, in one vivid", "alpha", "sdsrv", 0)

	// An image model whose engine fails: the script says so, exits 1 and
	// writes no file.
	out = filepath.Join(t.TempDir(), "none.png")
	text, err := execScript(t, script, append(env, "OUT="+out, "IMAGE_MODEL=broken"), "a cat")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(text, "unknown format") ||
		!strings.HasSuffix(text, "llm-to-image: the image job failed\n") {
		t.Fatalf("with a broken image model: %v\n%s", err, text)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("image file after a failed job: %v", err)
	}
}

// checkLLMToImage checks one successful run of llm-to-image.sh: what it
// printed, the image file it wrote and the two jobs on the server. steps is
// the number of step lines the image job shows (0: none are checked).
func checkLLMToImage(t *testing.T, d *daemon, text, out, prompt, llm, img string, steps int) {
	t.Helper()
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if sz := decodePNG(t, raw).Bounds().Size(); sz.X != 64 || sz.Y != 64 {
		t.Fatalf("image %v, want the model's 64x64", sz)
	}
	var stepLines strings.Builder
	for i := 1; i <= steps; i++ {
		fmt.Fprintf(&stepLines, "step %d/%d\n", i, steps)
	}
	// The LLM's text is shown as streamed, in order with the progress lines:
	// after the job starts, ending its line before the job's summary.
	for _, want := range []string{"== 1/2  " + llm + " writes an image prompt about: ",
		"running on " + llm + "\n" + prompt + "\ncompleted in ", "== 2/2  " + img + " draws it\n", "evicting " + llm + " to make room for " + img + "\n",
		"loading model " + img + " (6000 MiB reserved)\n", stepLines.String(), "\n== done in ",
		"prompt: " + prompt + "\n", fmt.Sprintf("image:  %s (%d bytes)\n", out, len(raw))} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// On the server: each job completed at its first attempt; the LLM's
	// text is the prompt, and the image job's image is the file.
	id := func(model string) string {
		m := regexp.MustCompile(`job (\S+) queued for ` + model + "\n").FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no job of %s in the output:\n%s", model, text)
		}
		if js := d.waitJob(m[1], 5*time.Second); js.Status != "completed" || js.Attempts != 1 || js.Model != model {
			t.Fatalf("%s job: %+v", model, js)
		}
		return m[1]
	}
	if got := d.resultText(id(llm)); got != prompt {
		t.Errorf("LLM result %q, want %q", got, prompt)
	}
	imgID := id(img)
	if first := d.checkImages(imgID, 1, 64, 64); !bytes.Equal(first, raw) {
		t.Errorf("the image file (%d bytes) is not the job's image (%d bytes)", len(raw), len(first))
	}
	// The stand-in's image is a function of prompt and seed: drawing the
	// LLM's text with the same seed again gives the same bytes.
	var res struct{ Seed int64 }
	d.do("GET", "/jobs/"+imgID+"/result", nil, &res)
	again := d.submitParams(img, prompt, map[string]any{"seed": res.Seed})
	if js := d.waitJob(again, time.Minute); js.Status != "completed" {
		t.Fatalf("second %s job: %+v", img, js)
	}
	if b := d.checkImages(again, 1, 64, 64); !bytes.Equal(b, raw) {
		t.Errorf("the %s job did not draw the LLM's text %q (seed %d)", img, prompt, res.Seed)
	}
}
