package sdcpp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// More of the conformance suite (see conformance_test.go): what the
// programs do before any model loads, and sd-server when none does.

// programs are tg's binaries by role, those that are set.
func (tg sdTarget) programs() map[string]string {
	out := map[string]string{}
	if tg.cli != "" {
		out["sd-cli"] = tg.cli
	}
	if tg.server != "" {
		out["sd-server"] = tg.server
	}
	return out
}

// checkHelpAndVersion: -h and --help print the usage to stdout and exit 0
// with nothing on stderr, whatever follows them (parsing stops there);
// --version as the first argument prints one version line and exits 0.
func checkHelpAndVersion(t *testing.T, tg sdTarget) {
	for role, bin := range tg.programs() {
		for _, args := range [][]string{{"--help"}, {"-h", "--no-such-flag"}} {
			code, stdout, stderr := runSD(t, bin, args...)
			if code != 0 || !strings.Contains(stdout, "Usage: ") || stderr != "" {
				t.Errorf("%s %q: exit %d, stderr %q, stdout starts %q; want 0, nothing, the usage",
					role, args, code, stderr, stdout[:min(len(stdout), 200)])
			}
		}
		code, stdout, stderr := runSD(t, bin, "--version")
		if code != 0 || !strings.HasPrefix(stdout, "stable-diffusion.cpp version ") || strings.Count(stdout, "\n") != 1 || stderr != "" {
			t.Errorf("%s --version: exit %d, stdout %q, stderr %q; want 0 and one version line", role, code, stdout, stderr)
		}
	}
}

// checkValidation: after parsing, a missing model flag, a batch count or
// step count below 1 and a negative CFG scale are refused with one error
// line and the usage, exit 1, before any model file is touched; RunCLI
// takes each for bad input.
func checkValidation(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	model := "/nonexistent/x.safetensors" // never opened: no "loading model from"
	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"-p", "x"}, "error: the following arguments are required: model_path/diffusion_model"},
		{[]string{"-m", model, "-p", "x", "-b", "0"}, "error: batch_count must be greater than 0"},
		{[]string{"-m", model, "-p", "x", "--steps", "0"}, "error: the sample_steps must be greater than 0"},
		{[]string{"-m", model, "-p", "x", "--cfg-scale", "-1"}, "error: cfg_scale must be positive"},
	} {
		code, stdout, stderr := runSD(t, tg.cli, c.args...)
		if code != 1 || !strings.Contains(stderr, "[ERROR]") || !strings.Contains(stderr, c.line) ||
			!strings.Contains(stdout, "Usage: ") || strings.Contains(stdout, "loading model from") {
			t.Errorf("%q: exit %d, stderr %q, stdout starts %q; want 1, %q, the usage, no load",
				c.args, code, stderr, stdout[:min(len(stdout), 300)], c.line)
			continue
		}
		err := RunCLI(context.Background(), CLIRun{Name: "conf", Binary: tg.cli, Args: c.args})
		var ce *CLIError
		if !errors.As(err, &ce) || !ce.BadInput() || !strings.Contains(ce.Error(), c.line) {
			t.Errorf("%q: RunCLI = %v; want bad input naming %q", c.args, err, c.line)
		}
	}
}

// checkServerArgumentError: sd-server refuses an unknown argument as
// sd-cli does (error line on stderr, usage on stdout, exit 1), and a
// --listen-port out of range after parsing.
func checkServerArgumentError(t *testing.T, tg sdTarget) {
	if tg.server == "" {
		t.Skip("SD_SERVER not set")
	}
	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"-m", notAModel(t), "--no-such-flag"}, "error: unknown argument: --no-such-flag"},
		{[]string{"-m", notAModel(t), "--listen-port", "70000"}, "error: listen_port should be in the range [0, 65535]"},
	} {
		code, stdout, stderr := runSD(t, tg.server, c.args...)
		if code != 1 || !strings.Contains(stderr, "[ERROR]") || !strings.Contains(stderr, c.line) ||
			!strings.Contains(stdout, "Usage: ") || strings.Contains(stdout, "listening on") {
			t.Errorf("%q: exit %d, stderr %q, stdout starts %q; want 1, %q, the usage",
				c.args, code, stderr, stdout[:min(len(stdout), 300)], c.line)
		}
	}
}

// checkServerLoadFails: a model that does not load (a missing file, a
// file that is no model) ends sd-server with exit 1 and "[ERROR] …
// new_sd_ctx_t failed" on stderr before it listens: no "listening on", the
// port stays free. Through VramCram it is a failed start (exit 1 before
// ready), not a port that could not be listened on.
func checkServerLoadFails(t *testing.T, tg sdTarget) {
	if tg.server == "" {
		t.Skip("SD_SERVER not set")
	}
	for _, c := range []struct {
		model string
		extra []string
	}{{notAModel(t), tg.junk}, {"/nonexistent/x.safetensors", nil}} {
		model := c.model
		port := freePort(t)
		args := append([]string{"-m", model, "--listen-ip", "127.0.0.1", "--listen-port", strconv.Itoa(port)}, c.extra...)
		code, stdout, stderr := runSD(t, tg.server, args...)
		t.Logf("%s: exit %d\nstdout %s\nstderr %s", model, code, stdout, stderr)
		if code != 1 || !strings.Contains(stderr, "[ERROR]") || !strings.Contains(stderr, "new_sd_ctx_t failed") ||
			strings.Contains(stdout+stderr, "listening on") {
			t.Errorf("%s: exit %d, stderr %q; want 1 and new_sd_ctx_t failed, never listening", model, code, stderr)
		}
		cfg := runner.Config{
			Name: "conf", Binary: tg.server, ReadyPath: ServerReadyPath, ReadyTimeout: 60 * time.Second,
			HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 5 * time.Second, StopGrace: 5 * time.Second,
			ArgsFunc: ServerArgs(ServerOptions{Files: Files{Model: model}, Steps: 1, Extra: c.extra}), Logger: enginetest.Logger(t),
		}
		p := start(t, cfg)
		err := (&sdServerEngine{Process: p}).WaitReady(context.Background())
		var ee *runner.ExitError
		if !errors.As(err, &ee) || ee.Code != 1 || !ee.BeforeReady || strings.Contains(err.Error(), "could not listen") ||
			!strings.Contains(err.Error(), "new_sd_ctx_t failed") {
			t.Errorf("%s: WaitReady = %v; want exit 1 before ready naming new_sd_ctx_t failed", model, err)
		}
	}
}

// freePort returns a port nothing listens on (now).
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkNotANumber: a numeric flag whose value is no number, or one out of
// range, is read by std::stoi (stof, stoll) and nothing catches the
// exception: the program aborts (SIGABRT) with the C++ runtime's two lines
// on stderr and no usage. RunCLI takes it for bad input.
func checkNotANumber(t *testing.T, tg sdTarget) {
	for role, bin := range tg.programs() {
		for _, c := range []struct{ flag, value, exc, what string }{
			{"-W", "abc", "invalid_argument", "stoi"},
			{"--steps", "99999999999", "out_of_range", "stoi"},
			{"--cfg-scale", "x", "invalid_argument", "stof"},
			{"-s", "seed", "invalid_argument", "stoll"},
		} {
			cmd := exec.Command(bin, "-m", notAModel(t), "-p", "x", c.flag, c.value)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			want := "terminate called after throwing an instance of 'std::" + c.exc + "'\n  what():  " + c.what + "\n"
			if !ws.Signaled() || ws.Signal() != syscall.SIGABRT || stderr.String() != want || stdout.Len() != 0 {
				t.Errorf("%s %s %s: %v, stderr %q, %d bytes on stdout; want SIGABRT, %q, nothing",
					role, c.flag, c.value, cmd.ProcessState, stderr.String(), stdout.Len(), want)
			}
		}
	}
	if tg.cli == "" {
		return
	}
	err := RunCLI(context.Background(), CLIRun{Name: "conf", Binary: tg.cli, Args: []string{"-m", notAModel(t), "-W", "64px", "-H", "x"}})
	var ce *CLIError
	if !errors.As(err, &ce) || !ce.BadInput() || !strings.Contains(ce.Error(), "killed by signal aborted") ||
		!strings.Contains(ce.Error(), "std::invalid_argument") {
		t.Errorf("RunCLI = %v; want bad input, aborted with std::invalid_argument", err)
	}
}

// checkLoadLines: the loader tries every model file, in its own order, and
// says which failed: "loading diffusion model from 'X'" … "loading
// diffusion model from 'X' failed", a failed -m as "init model loader from
// file failed", then "get sd version from file failed: '<-m path>'"; a
// diffusers directory needs unet/diffusion_pytorch_model.safetensors. Each
// is bad input.
func checkLoadLines(t *testing.T, tg sdTarget) {
	tg.needCLI(t)
	junk, dir := notAModel(t), t.TempDir()
	for _, c := range []struct {
		args  []string
		lines []string
	}{
		{[]string{"--vae", "/nonexistent/vae.sft", "--diffusion-model", "/nonexistent/d.gguf"}, []string{
			"loading diffusion model from '/nonexistent/d.gguf'", "file /nonexistent/d.gguf not found",
			"loading diffusion model from '/nonexistent/d.gguf' failed", "loading vae from '/nonexistent/vae.sft' failed",
			"get sd version from file failed: ''"}},
		{append([]string{"--vae", "/nonexistent/vae.sft", "-m", junk}, tg.junk...), []string{
			"loading model from '" + junk + "'", "unknown format " + junk, "init model loader from file failed: '" + junk + "'",
			"loading vae from '/nonexistent/vae.sft' failed", "get sd version from file failed: '" + junk + "'"}},
		{[]string{"-m", dir}, []string{"load " + dir + " using diffusers format",
			"failed to open '" + filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors") + "'",
			"get sd version from file failed: '" + dir + "'"}},
	} {
		args := append(append([]string(nil), c.args...), small(t)...)
		code, stdout, stderr := runSD(t, tg.cli, args...)
		for _, l := range c.lines {
			if code != 1 || !strings.Contains(stdout+stderr, l) {
				t.Errorf("%q: exit %d, no %q in\n%s%s", c.args, code, l, stdout, stderr)
			}
		}
		err := RunCLI(context.Background(), CLIRun{Name: "conf", Binary: tg.cli, Args: args})
		var ce *CLIError
		if !errors.As(err, &ce) || !ce.BadInput() {
			t.Errorf("%q: RunCLI = %v; want bad input", c.args, err)
		}
	}
}
