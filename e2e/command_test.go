package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command engine end to end: the stand-in runs as an OpenAI server from
// a cmd template with an env entry, beside a llama-server model (with its
// own config.binary) and an sd-cli model, under a budget where no two fit.

type cmdSetup struct {
	e2eSetup
	llamaB string // alpha's own llama-server (config.binary)
	sdCLI  string
}

func writeCommandConfig(t *testing.T, engine string) cmdSetup {
	t.Helper()
	dir := t.TempDir()
	s := cmdSetup{llamaB: filepath.Join(dir, "llama-b"), sdCLI: filepath.Join(dir, "sd-cli")}
	for _, link := range []string{s.llamaB, s.sdCLI} {
		if err := os.Symlink(engine, link); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	s.sizes = map[string]int{"alpha": 5000, "cmdm": 5000, "sd": 6000}
	s.port, s.budget, s.dir = freePort(t), 9000, dir
	// inference.llama_server_path names nothing: alpha runs only through
	// its config.binary.
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: /nonexistent/llama-server, sd_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 3}
logging: {level: debug, format: json}
models:
  llm:
    - {name: alpha, model_path: %s, vram_mb: 5000, config: {binary: %s, parallel: 2, context_size: 4096, extra_args: [--test-token-delay, 5ms]}}
    - name: cmdm
      model_path: %s
      vram_mb: 5000
      config:
        engine: command
        parallel: 2
        cmd: [%s, -m, "${MODEL_PATH}", --host, "${HOST}", --port, "${PORT}", --alias, "${MODEL_NAME}", --test-load-delay, 30ms]
        env: {E2E_CMD_MARK: "from-config-${MODEL_NAME}"}
  diffusion:
    - {name: sd, model_path: %s, vram_mb: 6000, config: {engine: sd-cli, width: 64, height: 64, steps: 3, cfg_scale: 1}}
`, s.port, filepath.Join(dir, "data"), s.sdCLI, file("alpha.gguf"), s.llamaB, file("cmdm.gguf"), engine, file("sd.safetensors"))
	s.cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// submitEndpoint queues a durable OpenAI request.
func (d *daemon) submitEndpoint(model, endpoint string, body map[string]any) string {
	d.t.Helper()
	var out map[string]any
	code := d.do("POST", "/jobs", map[string]any{"model": model, "endpoint": endpoint, "body": body}, &out)
	if code != http.StatusAccepted {
		d.t.Fatalf("submit %s %s: %d %v", model, endpoint, code, out)
	}
	return out["job_id"].(string)
}

// chatAnswer is the part of an OpenAI chat completion the test reads.
type chatAnswer struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct{ Content string } `json:"message"`
	} `json:"choices"`
}

// chatResult fetches a completed endpoint job's stored answer.
func (d *daemon) chatResult(id string) chatAnswer {
	d.t.Helper()
	var a chatAnswer
	if code := d.do("GET", "/jobs/"+id+"/result", nil, &a); code != 200 || a.Object != "chat.completion" || len(a.Choices) != 1 {
		d.t.Fatalf("result %s: %d %+v", id, code, a)
	}
	return a
}

// procByAlias finds the live process started with --alias name and an
// argument under dir (the test's own files: tests in parallel run models of
// the same name) and returns its pid and argv.
func procByAlias(name, dir string) (int, []string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		ours := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, dir+string(os.PathSeparator)) })
		if k := slices.Index(args, "--alias"); ours && k > 0 && k+1 < len(args) && args[k+1] == name {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			return pid, args
		}
	}
	return 0, nil
}

func TestE2E_CommandEngineBesideLlamaAndSD(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeCommandConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, s.sizes, s.budget)
	chat := func(text string) map[string]any {
		return map[string]any{"model": "cmdm", "messages": []map[string]any{{"role": "user", "content": text}}}
	}

	// Jobs of every kind, one after another: each load evicts the last model.
	for round := range 2 {
		a := d.submit("alpha", fmt.Sprintf("alpha round %d", round))
		if js := d.waitJob(a, 60*time.Second); js.Status != "completed" || d.resultText(a) != fmt.Sprintf("echo: alpha round %d", round) {
			t.Fatalf("alpha job: %+v", js)
		}
		if pid, args := procByAlias("alpha", filepath.Dir(s.llamaB)); pid == 0 || args[0] != s.llamaB {
			t.Fatalf("alpha runs %q, want its config.binary %s", args, s.llamaB)
		}
		c := d.submitEndpoint("cmdm", "/v1/chat/completions", chat(fmt.Sprintf("durable %d", round)))
		if js := d.waitJob(c, 60*time.Second); js.Status != "completed" {
			t.Fatalf("endpoint job: %+v", js)
		}
		if got := d.chatResult(c); got.Choices[0].Message.Content != fmt.Sprintf("echo: durable %d", round) || got.Model != "cmdm" {
			t.Fatalf("endpoint job answer %+v", got)
		}
		// The engine process really has the env entry of the config.
		pid, args := procByAlias("cmdm", filepath.Dir(s.llamaB))
		if pid == 0 || args[0] != engine {
			t.Fatalf("command engine process %d %q", pid, args)
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), "E2E_CMD_MARK=from-config-cmdm") {
			t.Fatalf("engine %d environment lacks E2E_CMD_MARK=from-config-cmdm (%v)", pid, err)
		}
		// The interactive OpenAI route reaches the command model too.
		var live chatAnswer
		if code := d.do("POST", "/v1/chat/completions", chat("live"), &live); code != 200 || len(live.Choices) != 1 || live.Choices[0].Message.Content != "echo: live" {
			t.Fatalf("/v1/chat/completions: %d %+v", code, live)
		}
		p := d.submit("cmdm", "plain prompt") // a prompt job on the command model
		if js := d.waitJob(p, 60*time.Second); js.Status != "completed" || d.resultText(p) != "echo: plain prompt" {
			t.Fatalf("prompt job on the command model: %+v", js)
		}
		sd := d.submitParams("sd", fmt.Sprintf("a picture %d", round), map[string]any{"seed": round})
		if js := d.waitJob(sd, 60*time.Second); js.Status != "completed" {
			t.Fatalf("sd job: %+v", js)
		}
		d.checkImages(sd, 1, 64, 64)
	}
	if ev := events.ofType("model_evicted"); len(ev) < 5 {
		t.Fatalf("%d evictions, want one per swap (at least 5)", len(ev))
	}

	// A durable endpoint job queued behind a busy model survives kill -9.
	long := d.submit("alpha", strings.Repeat("slow ", 400)) // 2 s of tokens
	waitRunning(t, d, long)
	queued := d.submitEndpoint("cmdm", "/v1/chat/completions", chat("after the crash"))
	var js jobStatus
	if d.do("GET", "/jobs/"+queued, nil, &js); js.Status != "queued" {
		t.Fatalf("endpoint job %+v, want queued behind the running alpha job", js)
	}
	d.signal(syscall.SIGKILL, 10*time.Second)
	d2 := startDaemon(t, bin, s.cfg, s.port)
	if js := d2.waitJob(queued, 90*time.Second); js.Status != "completed" {
		t.Fatalf("endpoint job after kill -9: %+v", js)
	}
	if got := d2.chatResult(queued); got.Choices[0].Message.Content != "echo: after the crash" {
		t.Fatalf("answer after restart %+v", got)
	}
	if js := d2.waitJob(long, 90*time.Second); js.Status != "completed" {
		t.Fatalf("alpha job after kill -9: %+v", js)
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.over) > 0 {
		t.Fatalf("ledger over budget: %v", events.over)
	}
}

// waitRunning polls until job id runs.
func waitRunning(t *testing.T, d *daemon, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var js jobStatus
		d.do("GET", "/jobs/"+id, nil, &js)
		if js.Status == "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not running: %+v", id, js)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
