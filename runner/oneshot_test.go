package runner

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// oneShot runs the stand-in as sd-cli: one image, then exit.
func oneShot(t *testing.T, extra ...string) Config {
	t.Helper()
	args := append([]string{"--test-role", "sd-cli", "-m", modelFile(t), "-p", "a fox", "-o", filepath.Join(t.TempDir(), "out.png"),
		"-W", "64", "-H", "64", "--steps", "3", "--cfg-scale", "1", "-s", "1", "-b", "1"}, extra...)
	return Config{Name: "sd-a", Binary: standIn(t), ArgsFunc: func(int) []string { return args }, Logger: testLogger(t), TermOutput: true}
}

func TestRun_OneShot(t *testing.T) {
	t.Parallel()
	cfg := oneShot(t)
	var pid int
	var exited <-chan struct{}
	cfg.SpawnedFunc = func(p int, ex <-chan struct{}) { pid, exited = p, ex }
	var bars int
	cfg.LineFunc = func(line string) bool {
		if strings.Contains(line, "it/s") || strings.Contains(line, "s/it") {
			bars++
			return false
		}
		return true
	}
	if err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("exited not closed after Run returned")
	}
	if pid <= 0 || !processGone(pid) || bars == 0 {
		t.Fatalf("pid %d gone %v, %d progress lines seen", pid, processGone(pid), bars)
	}

	// A failure is the supervisor's ExitError, with the output's tail.
	err := Run(context.Background(), oneShot(t, "--test-crash-at-step", "2"))
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 2 || ee.BeforeReady || !tailHas(ee.Tail, "simulated crash") {
		t.Fatalf("err %v, want *ExitError code 2 with the crash in its tail", err)
	}
	// An ended ctx kills the run at once (it hangs, ignoring SIGTERM).
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("job cancelled")
	cfg = oneShot(t, "--test-hang-at-step", "2", "--test-ignore-sigterm")
	cfg.LineFunc = func(line string) bool {
		if strings.Contains(line, "1/3") {
			cancel(cause)
		}
		return true
	}
	if err := Run(ctx, cfg); !errors.Is(err, cause) {
		t.Fatalf("err %v, want the cancel cause", err)
	}
}
