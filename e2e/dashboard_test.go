package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The dashboard test drives the page in headless Chromium: scripts/dashboard-test
// (playwright-core) loads it, submits prompts and watches an eviction appear.
// It needs Chromium (Debian's chromium; CHROMIUM_PATH overrides the path), node
// and `npm ci` in scripts/dashboard-test. Without them it is skipped with the
// reason, unless DASHBOARD_TEST_REQUIRED=1 (set by .ci/run), which makes the
// missing tool a failure.

const dashboardScriptDir = "scripts/dashboard-test"

// dashboardTools returns chromium's and node's paths, or why they cannot be used.
func dashboardTools() (chromium, node, missing string) {
	chromium = os.Getenv("CHROMIUM_PATH")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		return "", "", fmt.Sprintf("no Chromium at %s (apt-get install chromium, or set CHROMIUM_PATH)", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "", "no node in PATH (apt-get install nodejs npm)"
	}
	if _, err := os.Stat(filepath.Join(dashboardScriptDir, "node_modules", "playwright-core")); err != nil {
		return "", "", "playwright-core not installed (run: npm ci --prefix " + dashboardScriptDir + ")"
	}
	return chromium, node, ""
}

// dashboardScreenshot is where the screenshot is kept after the test:
// DASHBOARD_SCREENSHOT, else vramcram-dashboard-test/dashboard.png in $TMPDIR.
func dashboardScreenshot(t *testing.T) string {
	t.Helper()
	path := os.Getenv("DASHBOARD_SCREENSHOT")
	if path == "" {
		path = filepath.Join(os.TempDir(), "vramcram-dashboard-test", "dashboard.png")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(path)
	return path
}

// writeDashboardConfig writes a config with two 4000 MiB models and a 5000 MiB
// budget, so loading one evicts the other, and one API key.
func writeDashboardConfig(t *testing.T, engine, key string) (cfg string, port int) {
	t.Helper()
	dir := t.TempDir()
	port = freePort(t)
	var models bytes.Buffer
	for _, name := range []string{"alpha", "beta"} {
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 4000\n"+
			"      config: {context_size: 512, extra_args: [--test-load-delay, 100ms, --test-token-delay, 20ms]}\n", name, path)
	}
	text := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0, api_keys: [%s]}
storage: {data_dir: %s}
vram: {total_mb: 6000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, key, filepath.Join(dir, "data"), engine, models.String())
	cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, port
}

func TestE2E_DashboardInHeadlessChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	chromium, node, missing := dashboardTools()
	if missing != "" {
		if os.Getenv("DASHBOARD_TEST_REQUIRED") == "1" {
			t.Fatalf("dashboard browser test required but cannot run: %s", missing)
		}
		t.Skipf("dashboard browser test skipped: %s", missing)
	}
	bin, engine := buildBinaries(t)
	const key = "dashboard-test-key"
	cfg, port := writeDashboardConfig(t, engine, key)
	d := startDaemon(t, bin, cfg, port)
	t.Cleanup(func() {
		// Runs before startDaemon's SIGKILL: a graceful stop leaves no
		// engine behind for the other end-to-end tests to find.
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
		}
	})
	shot := dashboardScreenshot(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dashboardScriptDir, "test.mjs"))
	cmd.Env = append(os.Environ(),
		"DASHBOARD_URL="+d.url, "DASHBOARD_SCREENSHOT="+shot, "DASHBOARD_API_KEY="+key,
		"MODEL_A=alpha", "MODEL_B=beta", "CHROMIUM_PATH="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("browser test output:\n%s", out)
	if err != nil {
		t.Fatalf("browser test: %v", err)
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
		t.Fatalf("screenshot %s is not a page-sized PNG (%d bytes)", shot, len(png))
	}
	t.Logf("dashboard screenshot: %s", shot)

	// What the page showed matches the daemon: alpha was evicted for beta.
	req, _ := http.NewRequest("GET", d.url+"/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var models struct {
		Models []struct{ Name, State string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&models); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /models: %d %v", resp.StatusCode, err)
	}
	states := map[string]string{}
	for _, m := range models.Models {
		states[m.Name] = m.State
	}
	if states["alpha"] != "unloaded" || states["beta"] != "ready" {
		t.Errorf("model states %v, want alpha unloaded and beta ready", states)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(engine); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
}
