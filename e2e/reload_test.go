package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadSetup writes config files for the hot-reload test.
type reloadSetup struct {
	dir, cfg, engine string
	port             int
}

// write replaces the config file with models (name → extra args) and any
// extra YAML appended to the first model's entry.
func (s reloadSetup) write(t *testing.T, names []string, modelExtra string) {
	t.Helper()
	var models strings.Builder
	for k, name := range names {
		path := filepath.Join(s.dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 3000\n"+
			"      config: {parallel: 1, context_size: 512, extra_args: [--test-load-delay, 50ms, --test-token-delay, 100ms]}\n", name, path)
		if k == 0 {
			models.WriteString(modelExtra)
		}
	}
	text := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 3}
logging: {level: debug, format: json}
models:
  llm:
%s`, s.port, filepath.Join(s.dir, "data"), s.engine, models.String())
	// Write aside and rename, as editors do: the watcher never reads half a file.
	tmp := s.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.cfg); err != nil {
		t.Fatal(err)
	}
}

// modelPID is model's engine pid in /models (0: not loaded or not listed).
func (d *daemon) modelPID(model string) (int, bool) {
	var l struct {
		Models []struct {
			Name string
			PID  int
		}
	}
	d.do("GET", "/models", nil, &l)
	for _, m := range l.Models {
		if m.Name == model {
			return m.PID, true
		}
	}
	return 0, false
}

// TestE2E_HotReload edits the config file of a daemon run with
// -watch-config while a job runs: an added model serves at once, the running
// job completes on an engine that was not restarted, a removed model fails
// its queued job and stops, and an invalid edit leaves the old config in
// force with /health's config_error, while vramcram check names the key.
func TestE2E_HotReload(t *testing.T) {
	bin, engine := buildBinaries(t)
	dir := t.TempDir()
	s := reloadSetup{dir: dir, cfg: filepath.Join(dir, "config.yaml"), engine: engine, port: freePort(t)}
	s.write(t, []string{"alpha", "beta"}, "")
	d := startDaemonArgs(t, bin, []string{"-config", s.cfg, "-watch-config"}, s.port)
	stopAtCleanup(t, d)

	long := d.submit("alpha", strings.Repeat("word ", 25)) // 26 tokens at 100 ms
	waitFor(t, func() string {
		var js jobStatus
		d.do("GET", "/jobs/"+long, nil, &js)
		if js.Status == "running" {
			return "ok"
		}
		return ""
	})
	pid, _ := d.modelPID("alpha")

	// Add gamma while alpha's job runs.
	s.write(t, []string{"alpha", "beta", "gamma"}, "")
	added := time.Now()
	var gammaJob string
	waitFor(t, func() string {
		var r struct {
			JobID string `json:"job_id"`
		}
		if d.do("POST", "/jobs", map[string]any{"model": "gamma", "prompt": "new here"}, &r) == http.StatusAccepted {
			gammaJob = r.JobID
		}
		return gammaJob
	})
	if js := d.waitJob(gammaJob, 30*time.Second); js.Status != "completed" {
		t.Fatalf("gamma job: %+v", js)
	}
	t.Logf("added model served its first job %.2f s after the config file was written", time.Since(added).Seconds())
	var js jobStatus
	d.do("GET", "/jobs/"+long, nil, &js)
	if js.Status != "running" {
		t.Logf("note: alpha's long job was %s when gamma's finished", js.Status)
	}
	if js := d.waitJob(long, 30*time.Second); js.Status != "completed" {
		t.Fatalf("the job running across the reload: %+v", js)
	}
	if now, _ := d.modelPID("alpha"); now != pid || pid == 0 {
		t.Fatalf("alpha's engine pid %d before the reload, %d after: restarted", pid, now)
	}

	// Remove beta while it runs one job and another waits.
	running := d.submit("beta", strings.Repeat("word ", 15))
	waitFor(t, func() string {
		d.do("GET", "/jobs/"+running, nil, &js)
		if js.Status == "running" {
			return "ok"
		}
		return ""
	})
	queued := d.submit("beta", "waiting")
	s.write(t, []string{"alpha", "gamma"}, "")
	if js := d.waitJob(queued, 30*time.Second); js.Status != "failed" || !strings.Contains(js.Error, "removed from the config") {
		t.Fatalf("queued job of the removed model: %+v", js)
	}
	if js := d.waitJob(running, 30*time.Second); js.Status != "completed" {
		t.Fatalf("running job of the removed model: %+v", js)
	}
	waitFor(t, func() string {
		if _, listed := d.modelPID("beta"); !listed {
			return "ok"
		}
		return ""
	})
	if code := d.do("POST", "/jobs", map[string]any{"model": "beta", "prompt": "x"}, nil); code != http.StatusNotFound {
		t.Fatalf("a job for the removed model: %d, want 404", code)
	}

	// An invalid edit: the old config stays in force.
	s.write(t, []string{"alpha", "gamma"}, "      ttl_seconds: -5\n")
	var health struct {
		Status      string `json:"status"`
		ConfigError string `json:"config_error"`
	}
	waitFor(t, func() string {
		d.do("GET", "/health", nil, &health)
		return health.ConfigError
	})
	if health.Status != "healthy" || !strings.Contains(health.ConfigError, "models.llm[0].ttl_seconds") {
		t.Fatalf("/health after an invalid edit: %+v", health)
	}
	if js := d.waitJob(d.submit("gamma", "still serving"), 30*time.Second); js.Status != "completed" {
		t.Fatalf("job after the invalid edit: %+v", js)
	}
	if code, _, errb := exitCode(t, exec.Command(bin, "check", "-config", s.cfg)); code != 1 || !strings.Contains(errb, "models.llm[0].ttl_seconds") {
		t.Fatalf("vramcram check of the invalid file: exit %d, %q", code, errb)
	}
	if code := d.do("POST", "/admin/reload", nil, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("POST /admin/reload of the invalid file: %d, want 422", code)
	}

	// vramcram check -url shows what a reload would change (a file the
	// daemon does not watch).
	next := s
	next.cfg = filepath.Join(dir, "next.yaml")
	next.write(t, []string{"alpha", "delta"}, "")
	code, out, errb := exitCode(t, exec.Command(bin, "check", "-config", next.cfg, "-url", d.url))
	if code != 0 || !strings.Contains(out, "models added: delta") || !strings.Contains(out, "models removed (queued jobs fail, running work finishes, then the engine stops): gamma") {
		t.Fatalf("check -url: exit %d\n%s%s", code, out, errb)
	}
	t.Logf("vramcram check -url:\n%s", out)
	s.write(t, []string{"alpha", "gamma"}, "")
	waitFor(t, func() string { // the fixed file is applied: the error clears
		health.ConfigError = ""
		d.do("GET", "/health", nil, &health)
		if health.ConfigError == "" {
			return "ok"
		}
		return ""
	})
}

// TestE2E_ReloadOnSIGHUP: without -watch-config, an edited file is applied
// on SIGHUP (and only then), and the daemon lives on.
func TestE2E_ReloadOnSIGHUP(t *testing.T) {
	bin, engine := buildBinaries(t)
	dir := t.TempDir()
	s := reloadSetup{dir: dir, cfg: filepath.Join(dir, "config.yaml"), engine: engine, port: freePort(t)}
	s.write(t, []string{"alpha"}, "")
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)
	s.write(t, []string{"alpha", "gamma"}, "")
	if _, listed := d.modelPID("gamma"); listed {
		t.Fatal("gamma listed before the reload")
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload is applied once the API takes gamma's jobs (the scheduler
	// lists gamma in /models a moment before the new API is swapped in).
	var gammaJob string
	waitFor(t, func() string {
		var r struct {
			JobID string `json:"job_id"`
		}
		if d.do("POST", "/jobs", map[string]any{"model": "gamma", "prompt": "after the signal"}, &r) == http.StatusAccepted {
			gammaJob = r.JobID
		}
		return gammaJob
	})
	if js := d.waitJob(gammaJob, 30*time.Second); js.Status != "completed" {
		t.Fatalf("gamma job: %+v", js)
	}
	if _, listed := d.modelPID("gamma"); !listed {
		t.Fatal("gamma not listed in /models after the reload")
	}
}
