package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"go.uber.org/goleak"
)

// standIn is the stand-in engine (runner/testengine), built once per test
// binary; it plays llama-server unless --test-role says otherwise.
func standIn(t *testing.T) string {
	t.Helper()
	return filepath.Join(enginetest.StandIn(t), "llama-server")
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		enginetest.Cleanup()
		os.Exit(code)
	}))
}

// testLogger logs to t.Log until the test's cleanups have run.
func testLogger(t *testing.T) *slog.Logger { return enginetest.Logger(t) }

// modelFile creates a stand-in model file.
func modelFile(t *testing.T) string { return enginetest.ModelFile(t, "tiny.gguf") }

// testConfig returns a config running the stand-in with extra flags.
func testConfig(t *testing.T, extra ...string) Config {
	t.Helper()
	return Config{
		Name:              "llama-a",
		Binary:            standIn(t),
		ArgsFunc:          standInArgs(modelFile(t), extra...),
		PortTakenMarker:   "couldn't bind HTTP server socket",
		ReadyTimeout:      20 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  5 * time.Second,
		StopGrace:         5 * time.Second,
		Logger:            testLogger(t),
	}
}

// start starts cfg and registers a cleanup that stops it and checks that
// Stop left nothing behind.
func start(t *testing.T, cfg Config) *Process {
	t.Helper()
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
		select {
		case <-p.Done():
		default:
			t.Errorf("Done not closed after Stop")
		}
	})
	return p
}

// startReady starts cfg and waits until it is ready.
func startReady(t *testing.T, cfg Config) *Process {
	t.Helper()
	p := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, strings.Join(p.Tail(), "\n"))
	}
	return p
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDone waits for p.Done.
func waitDone(t *testing.T, p *Process, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatalf("engine not done after %s; tail:\n%s", timeout, strings.Join(p.Tail(), "\n"))
	}
}

// processGone reports whether pid no longer runs (absent, or a zombie
// waiting for a reaper that may never come in a container).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}
