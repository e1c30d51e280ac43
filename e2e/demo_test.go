package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2E_Demo runs the README's quick start: make demo in the background
// (on a free port, its files in a temp dir), then the client commands
// against it, then Ctrl-C (SIGINT to make's process group), after which
// the daemon and every engine must be gone.
func TestE2E_Demo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	demoDir := t.TempDir()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	demo := exec.Command("make", "demo", "DEMO_PORT="+strconv.Itoa(port), "DEMO_DIR="+demoDir)
	demo.Env = cleanEnv()
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &syncBuffer{}
	demo.Stdout, demo.Stderr = logs, logs
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = demo.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL) // only if still there
		<-done
		if t.Failed() {
			t.Logf("make demo output:\n%s", lastLines(logs.String(), 60))
		}
	})
	waitHealthy(t, url, done, logs, 10*time.Minute) // make demo builds first

	// The quick start's commands, from a working directory of their own
	// (diffusion results are written there).
	work := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "bin/vramcram"), append([]string{"--url", url}, args...)...)
		cmd.Dir, cmd.Env = work, cleanEnv()
		code, out, errb := exitCode(t, cmd)
		if code != 0 {
			t.Fatalf("vramcram %q: exit %d\n%s%s", args, code, out, errb)
		}
		return out
	}
	out := cli("models")
	for _, m := range []string{"demo-chat", "demo-embed", "demo-image"} {
		if !strings.Contains(out, m) || strings.Contains(out, "unavailable") {
			t.Errorf("models: %s missing or unavailable:\n%s", m, out)
		}
	}
	if out := cli("submit", "-m", "demo-chat", "--wait", "Explain VRAM in one sentence."); out != "echo: Explain VRAM in one sentence.\n" {
		t.Errorf("submit demo-chat: %q", out)
	}
	if out := cli("ps"); !strings.Contains(out, "demo-chat") || !strings.Contains(out, "ready") {
		t.Errorf("ps after a chat job:\n%s", out)
	}
	cli("submit", "-m", "demo-image", "--wait", "a red fox")
	if pngs, _ := filepath.Glob(filepath.Join(work, "*.png")); len(pngs) != 1 {
		t.Errorf("submit demo-image --wait wrote %v, want one PNG", pngs)
	}

	resp, err := http.Post(url+"/v1/embeddings", "application/json", strings.NewReader(`{"model":"demo-embed","input":"hello"}`))
	if err != nil {
		t.Fatal(err)
	}
	var emb struct {
		Data []struct{ Embedding []float64 } `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&emb)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(emb.Data) != 1 || len(emb.Data[0].Embedding) == 0 {
		t.Errorf("embeddings: %d %v %+v", resp.StatusCode, err, emb)
	}
	resp, err = http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(page)), "<html") {
		t.Errorf("dashboard: %d %.200s", resp.StatusCode, page)
	}

	// Ctrl-C: SIGINT to the whole foreground group, make and the daemon.
	if err := syscall.Kill(-demo.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("make demo still running 60 s after SIGINT")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("the daemon did not stop cleanly:\n%s", lastLines(logs.String(), 20))
	}
	if left := procsIn(demoDir); len(left) > 0 {
		t.Errorf("processes left running in %s: %v", demoDir, left)
	}
}

// procsIn lists the processes whose working directory is dir (pid →
// command line): the demo's daemon and engines run there.
func procsIn(dir string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != dir {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out[pid] = strings.ReplaceAll(string(b), "\x00", " ")
	}
	return out
}
