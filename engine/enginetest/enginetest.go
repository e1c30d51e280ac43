// Package enginetest holds the test helpers of the engine packages: the
// stand-in engine (runner/testengine) built once per test binary, a logger
// writing to t.Log, stand-in model files and deadline polling.
package enginetest

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once sync.Once
	dir  string
	err  error
)

// StandIn builds the stand-in engine once and returns the directory that
// holds it under the names it plays by: llama-server, sd-cli and sd-server
// (its role follows the program name). Remove the directory with Cleanup
// from TestMain.
func StandIn(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, err = os.MkdirTemp("", "enginetest")
		if err != nil {
			return
		}
		goBin, lerr := exec.LookPath("go")
		if lerr != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		bin := filepath.Join(dir, "llama-server")
		out, berr := exec.Command(goBin, "build", "-o", bin, "github.com/vramcram/vramcram/runner/testengine").CombinedOutput()
		if berr != nil {
			err = fmt.Errorf("build stand-in: %v\n%s", berr, out)
			return
		}
		for _, name := range []string{"sd-cli", "sd-server"} {
			if err = os.Symlink(bin, filepath.Join(dir, name)); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// Cleanup removes the stand-in's directory; call it at the end of TestMain.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// Logger logs to t.Log until the test's cleanups have run.
func Logger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// ModelFile creates a stand-in model file named name in a temp directory.
func ModelFile(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("GGUF stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// WaitFor polls cond until it holds or timeout passes.
func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ProcessGone reports whether pid no longer runs (absent, or a zombie
// waiting for a reaper that may never come in a container).
func ProcessGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}
