package sdcpp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// The conformance suite of stable-diffusion.cpp's programs: the behaviours
// VramCram's classification and argv rely on, checked against the stand-in
// always and against real binaries when SD_CLI and/or SD_SERVER are set.
// None needs model weights: every check stops at argument parsing or at
// loading a model file that is not one. SD_MODEL (a real checkpoint) adds
// the sd-server port check, which needs a model that loads.

// sdTarget is one pair of stable-diffusion.cpp programs to check.
type sdTarget struct {
	name        string
	cli, server string // binaries; "" skips that program's checks
	model       string // a loadable model ("" for the real ones without SD_MODEL)
	real        bool
	// junk are the arguments that make the program refuse notAModel: none
	// for the real ones; the stand-in loads any file unless told.
	junk []string
}

func sdTargets(t *testing.T) []sdTarget {
	dir := standIn(t)
	ts := []sdTarget{{name: "StandIn", cli: filepath.Join(dir, "sd-cli"), server: filepath.Join(dir, "sd-server"), model: sdModel(t),
		junk: []string{"--test-fail-load"}}}
	cli, server := os.Getenv("SD_CLI"), os.Getenv("SD_SERVER")
	if cli != "" || server != "" {
		ts = append(ts, sdTarget{name: "Real", cli: cli, server: server, model: os.Getenv("SD_MODEL"), real: true})
	} else {
		t.Log("SD_CLI and SD_SERVER not set: checking the stand-in only")
	}
	return ts
}

func TestConformance_StableDiffusion(t *testing.T) {
	for _, tg := range sdTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			t.Run("ArgumentError", func(t *testing.T) { t.Parallel(); checkArgumentError(t, tg) })
			t.Run("SamplerNames", func(t *testing.T) { t.Parallel(); checkSamplerNames(t, tg) })
			t.Run("PromptFlags", func(t *testing.T) { t.Parallel(); checkPromptFlags(t, tg) })
			t.Run("MissingFile", func(t *testing.T) { t.Parallel(); checkMissingFile(t, tg) })
			t.Run("ServerPortTaken", func(t *testing.T) { t.Parallel(); checkServerPortTaken(t, tg) })
			t.Run("HelpAndVersion", func(t *testing.T) { t.Parallel(); checkHelpAndVersion(t, tg) })
			t.Run("Validation", func(t *testing.T) { t.Parallel(); checkValidation(t, tg) })
			t.Run("ServerArgumentError", func(t *testing.T) { t.Parallel(); checkServerArgumentError(t, tg) })
			t.Run("ServerLoadFails", func(t *testing.T) { t.Parallel(); checkServerLoadFails(t, tg) })
			t.Run("NotANumber", func(t *testing.T) { t.Parallel(); checkNotANumber(t, tg) })
			t.Run("LoadLines", func(t *testing.T) { t.Parallel(); checkLoadLines(t, tg) })
			t.Run("ServerRoutes", func(t *testing.T) { t.Parallel(); checkServerRoutes(t, tg) })
			t.Run("ServerSharedPort", func(t *testing.T) { t.Parallel(); checkServerSharedPort(t, tg) })
			t.Run("ServerSigterm", func(t *testing.T) { t.Parallel(); checkServerSigterm(t, tg) })
		})
	}
}

// runSD runs bin with args and returns its exit code, stdout and stderr.
func runSD(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func (tg sdTarget) needCLI(t *testing.T) {
	if tg.cli == "" {
		t.Skip("SD_CLI not set")
	}
}

// notAModel is a file that is no model (the real programs fail to load
// it; the stand-in loads anything). small are the arguments of a tiny run
// writing into a temporary directory.
func notAModel(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "junk.safetensors")
	if err := os.WriteFile(path, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func small(t *testing.T) []string {
	return []string{"-W", "64", "-H", "64", "--steps", "1", "-o", filepath.Join(t.TempDir(), "out.png")}
}

// checkArgumentError: an unknown argument writes one error line to stderr,
// then a usage text of far more lines than VramCram's output tail (200) to
// stdout, and exits 1. RunCLI still reports the error line, and as bad
// input.
func checkArgumentError(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	code, stdout, stderr := runSD(t, tg.cli, "-m", notAModel(t), "--no-such-flag")
	usage := strings.Count(stdout, "\n")
	t.Logf("exit %d, stderr %q, %d usage lines", code, strings.TrimSpace(stderr), usage)
	if code != 1 || !strings.Contains(stderr, "error: unknown argument: --no-such-flag") || usage <= runner.DefaultLogLines {
		t.Fatalf("exit %d, stderr %q, %d lines on stdout; want 1, the error line, more than %d usage lines",
			code, stderr, usage, runner.DefaultLogLines)
	}
	err := RunCLI(context.Background(), CLIRun{Name: "conf", Binary: tg.cli, Args: []string{"-m", notAModel(t), "--no-such-flag"},
		Logger: enginetest.Logger(t)})
	var ce *CLIError
	if !errors.As(err, &ce) || !ce.BadInput() || !strings.Contains(ce.Error(), "error: unknown argument: --no-such-flag") {
		t.Fatalf("RunCLI = %v; want bad input naming the argument", err)
	}
}

// checkSamplerNames: every name of SampleMethods and Schedulers (and the
// alias normal) passes sd-cli's argument check; an unknown one exits 1 with
// "invalid sample method".
func checkSamplerNames(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	model := notAModel(t)
	bad := func(flag, name, refusal string) bool {
		_, _, stderr := runSD(t, tg.cli, append([]string{"-m", model, "-p", "x", flag, name}, small(t)...)...)
		return strings.Contains(stderr, refusal)
	}
	for _, name := range SampleMethods {
		if bad("--sampling-method", name, "invalid sample method") {
			t.Errorf("sampling method %q refused", name)
		}
	}
	for _, name := range append(append([]string(nil), Schedulers...), schedulerAliases...) {
		if bad("--scheduler", name, "invalid scheduler") {
			t.Errorf("scheduler %q refused", name)
		}
	}
	// The refused name, then the parser's line for the flag.
	if !bad("--sampling-method", "euler_x", "invalid sample method euler_x\n") ||
		!bad("--sampling-method", "euler_x", "error: invalid parameter for argument: --sampling-method") {
		t.Error("an unknown sampling method was not refused with both lines")
	}
	if !bad("--scheduler", "bogus", "invalid scheduler bogus\n") ||
		!bad("--scheduler", "bogus", "error: invalid parameter for argument: --scheduler") {
		t.Error("an unknown scheduler was not refused with both lines")
	}
}

// checkPromptFlags: -p may be left out, and --prompt-file and
// --negative-prompt-file are arguments sd-cli knows.
func checkPromptFlags(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	dir := t.TempDir()
	prompt := filepath.Join(dir, "p.txt")
	if err := os.WriteFile(prompt, []byte(strings.Repeat("é", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	model := notAModel(t)
	for _, args := range [][]string{
		{"-m", model},
		{"-m", model, "--prompt-file", prompt, "--negative-prompt-file", prompt},
	} {
		_, _, stderr := runSD(t, tg.cli, append(args, small(t)...)...)
		for _, refusal := range []string{"unknown argument", "invalid parameter", "prompt file", "required: prompt"} {
			if strings.Contains(stderr, refusal) {
				t.Errorf("%q: %s", args, stderr)
			}
		}
	}
}

// checkMissingFile: a missing model file is "file X not found", bad input.
func checkMissingFile(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	model := "/nonexistent/x.safetensors"
	err := RunCLI(context.Background(), CLIRun{Name: "conf", Binary: tg.cli, Args: append([]string{"-m", model, "-p", "x"}, small(t)...),
		Logger: enginetest.Logger(t)})
	var ce *CLIError
	if !errors.As(err, &ce) || !ce.BadInput() || !strings.Contains(ce.Error(), "not found") {
		t.Fatalf("RunCLI = %v; want bad input saying the file is not found", err)
	}
	t.Logf("%v", ce)
}

// checkServerPortTaken: sd-server loads first, then listens; when the port
// is taken it exits 0 without an error line. Needs a model that loads.
func checkServerPortTaken(t *testing.T, tg sdTarget) {
	if tg.server == "" || tg.model == "" {
		t.Skip("SD_SERVER and SD_MODEL not set")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, stdout, stderr := runSD(t, tg.server, "-m", tg.model, "--listen-ip", "127.0.0.1", "--listen-port", port, "--steps", "1")
	t.Logf("exit %d, output ends %q", code, stdout[max(0, len(stdout)-200):])
	if !strings.Contains(stdout, "listening on") {
		t.Fatalf("no listening line: the model did not load?\n%s%s", stdout, stderr)
	}
	if code != 0 || strings.Contains(stderr, "[ERROR]") {
		t.Fatalf("exit %d, stderr %q; want 0 and no error line", code, stderr)
	}
}
