package sdcpp

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// sdModel creates a stand-in checkpoint file.
func sdModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sd-turbo.safetensors")
	if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliRun returns a run of the stand-in as sd-cli writing to dir/out.png.
func cliRun(t *testing.T, files Files, req ImageRequest, dir string, extra ...string) CLIRun {
	t.Helper()
	return CLIRun{
		Name:   "sd-a",
		Binary: testEngine(t),
		Args:   CLIArgs(files, req, filepath.Join(dir, "out.png"), append([]string{"--test-role", "sd-cli"}, extra...)),
		Logger: enginetest.Logger(t),
	}
}

func smallRequest() ImageRequest {
	return ImageRequest{Prompt: "a red fox", Width: 64, Height: 48, Steps: 3, CFGScale: 7, Seed: 42, Count: 1}
}

func TestCLIArgs(t *testing.T) {
	t.Parallel()
	files := Files{DiffusionModel: "/m/flux.gguf", VAE: "/m/ae.sft", ClipL: "/m/clip_l.sft", T5XXL: "/m/t5.gguf"}
	req := ImageRequest{Prompt: "-a cat", NegativePrompt: "blur", Width: 768, Height: 512, Steps: 4, CFGScale: 1.5,
		Seed: 7, Count: 2, SamplingMethod: "euler", Scheduler: "karras"}
	got := CLIArgs(files, req, "/d/out.png", []string{"--diffusion-fa"})
	want := strings.Fields("--diffusion-model /m/flux.gguf --vae /m/ae.sft --clip_l /m/clip_l.sft --t5xxl /m/t5.gguf -p -a_cat -n blur " +
		"-o /d/out.png -W 768 -H 512 --steps 4 --cfg-scale 1.5 -s 7 -b 2 --sampling-method euler --scheduler karras --diffusion-fa")
	want[9] = "-a cat"
	if !slices.Equal(got, want) {
		t.Fatalf("args\n got %q\nwant %q", got, want)
	}
	got = CLIArgs(Files{Model: "/m/sd.safetensors"}, ImageRequest{Prompt: "x", Width: 512, Height: 512, Steps: 20, CFGScale: 7}, "o.png", nil)
	want = strings.Fields("-m /m/sd.safetensors -p x -o o.png -W 512 -H 512 --steps 20 --cfg-scale 7 -s 0 -b 1")
	if !slices.Equal(got, want) {
		t.Fatalf("args\n got %q\nwant %q", got, want)
	}
}

func TestParseProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line        string
		step, steps int
		ok          bool
	}{
		{"  |=====>                                            | 3/20 - 1.52it/s", 3, 20, true},
		{"  |==================================================| 20/20 - 12.05s/it", 20, 20, true},
		{"|>    | 0/4 - 0.00s/it", 0, 4, true},
		{"  |##########                                        | 201/1000 - 350.00MB/s", 0, 0, false}, // loading tensors
		{"[INFO ] stable-diffusion.cpp:2540 - sampling completed, taking 0.03s", 0, 0, false},
		{"  |=====| 5/3 - 1.00it/s", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		step, steps, ok := ParseProgress(tt.line)
		if step != tt.step || steps != tt.steps || ok != tt.ok {
			t.Errorf("ParseProgress(%q) = %d %d %v, want %d %d %v", tt.line, step, steps, ok, tt.step, tt.steps, tt.ok)
		}
	}
}

func TestRunCLI_Success(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	req := smallRequest()
	req.Count = 2
	r := cliRun(t, Files{Model: sdModel(t)}, req, dir)
	var mu sync.Mutex
	var progress []string
	r.ProgressFunc = func(step, steps int) {
		mu.Lock()
		progress = append(progress, strconv.Itoa(step)+"/"+strconv.Itoa(steps))
		mu.Unlock()
	}
	var pid int
	var exited <-chan struct{}
	r.SpawnedFunc = func(p int, ex <-chan struct{}) { pid, exited = p, ex }
	if err := RunCLI(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1/3", "2/3", "3/3", "1/3", "2/3", "3/3"}; !slices.Equal(progress, want) {
		t.Fatalf("progress %v, want %v", progress, want)
	}
	select {
	case <-exited:
	default:
		t.Fatal("exited not closed after RunCLI returned")
	}
	if pid <= 0 || !enginetest.ProcessGone(pid) {
		t.Fatalf("pid %d still running", pid)
	}
	for _, name := range []string{"out_0.png", "out_1.png"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s := img.Bounds().Size(); s.X != 64 || s.Y != 48 {
			t.Fatalf("%s is %v", name, s)
		}
	}
}

func TestRunCLI_Deterministic(t *testing.T) {
	t.Parallel()
	model := sdModel(t)
	read := func(req ImageRequest) []byte {
		dir := t.TempDir()
		if err := RunCLI(context.Background(), cliRun(t, Files{Model: model}, req, dir)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "out.png"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := read(smallRequest()), read(smallRequest())
	other := smallRequest()
	other.Prompt = "a blue whale"
	if !bytes.Equal(a, b) || bytes.Equal(a, read(other)) {
		t.Fatal("images must be the same for the same request and differ for another prompt")
	}
}

func TestRunCLI_Failures(t *testing.T) {
	t.Parallel()
	model := sdModel(t)
	tests := []struct {
		name     string
		files    Files
		extra    []string
		code     int
		badInput bool
		msg      string
	}{
		{"MissingModel", Files{Model: "/nonexistent/x.safetensors"}, nil, 1, true, "file /nonexistent/x.safetensors not found"},
		{"UnknownFormat", Files{Model: model}, []string{"--test-fail-load"}, 1, true, "unknown format"},
		{"UnknownArgument", Files{Model: model}, []string{"--no-such-flag"}, 1, true, "error: unknown argument: --no-such-flag"},
		{"UnknownSampler", Files{Model: model}, []string{"--sampling-method", "euler_x"}, 1, true, "error: invalid sample method euler_x"},
		{"Crash", Files{Model: model}, []string{"--test-crash-at-step", "2"}, 2, false, "simulated crash"},
		// A numeric flag that is no number: an uncaught std::invalid_argument, SIGABRT.
		{"NotANumber", Files{Model: model}, []string{"--clip-skip", "two"}, -1, true, "killed by signal aborted: " +
			"terminate called after throwing an instance of 'std::invalid_argument' | what():  stoi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := RunCLI(context.Background(), cliRun(t, tt.files, smallRequest(), t.TempDir(), tt.extra...))
			var ce *CLIError
			if !errors.As(err, &ce) {
				t.Fatalf("err %v (%T), want *CLIError", err, err)
			}
			if ce.Code != tt.code || ce.BadInput() != tt.badInput || !strings.Contains(ce.Error(), tt.msg) {
				t.Fatalf("code %d bad input %v: %v", ce.Code, ce.BadInput(), ce)
			}
			if strings.Contains(ce.Error(), "Usage:") || strings.Contains(ce.Error(), "--option-") {
				t.Fatalf("message shows the usage text instead of the error: %v", ce)
			}
		})
	}
}

func TestRunCLI_CancelKillsGroup(t *testing.T) {
	t.Parallel()
	r := cliRun(t, Files{Model: sdModel(t)}, smallRequest(), t.TempDir(),
		"--test-hang-at-step", "2", "--test-ignore-sigterm", "--test-fork-grandchild")
	started := make(chan int, 1)
	r.SpawnedFunc = func(pid int, _ <-chan struct{}) { started <- pid }
	stepped := make(chan struct{}, 8)
	r.ProgressFunc = func(int, int) { stepped <- struct{}{} }
	ctx, cancel := context.WithCancelCause(context.Background())
	errCh := make(chan error, 1)
	go func() { errCh <- RunCLI(ctx, r) }()
	pid := <-started
	<-stepped // step 1 printed; it now hangs at step 2, ignoring SIGTERM
	cause := errors.New("job cancelled")
	cancel(cause)
	select {
	case err := <-errCh:
		if !errors.Is(err, cause) {
			t.Fatalf("err %v, want the cancel cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunCLI did not return after cancel")
	}
	if !enginetest.ProcessGone(pid) {
		t.Fatalf("sd-cli %d still running", pid)
	}
	// The grandchild was in the same group: nothing of it may be left.
	enginetest.WaitFor(t, 5*time.Second, "process group gone", func() bool {
		return errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH) || groupOnlyZombies(pid)
	})
}

// groupOnlyZombies reports whether every process of group pgid is a zombie.
func groupOnlyZombies(pgid int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(pgid) && !enginetest.ProcessGone(pid) {
			return false
		}
	}
	return true
}

func TestRunCLI_BinaryNotFound(t *testing.T) {
	t.Parallel()
	err := RunCLI(context.Background(), CLIRun{Name: "x", Binary: "/nonexistent/sd-cli"})
	if !errors.Is(err, runner.ErrBinaryNotFound) {
		t.Fatalf("err %v", err)
	}
}

func TestCLIError_Summary(t *testing.T) {
	t.Parallel()
	e := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: 1, Tail: []string{
		"[INFO ] stable-diffusion.cpp:713  - loading model from '/x'",
		"[WARN ] model_loader.cpp:254  - file /x not found",
		"[ERROR] stable-diffusion.cpp:905  - get sd version from file failed: '/x'",
		"[INFO ] main.cpp:910  - new_sd_ctx_t failed",
	}}}
	want := "engine m exited with code 1: [WARN ] model_loader.cpp:254  - file /x not found | " +
		"[ERROR] stable-diffusion.cpp:905  - get sd version from file failed: '/x' | [INFO ] main.cpp:910  - new_sd_ctx_t failed"
	if e.Error() != want || !e.BadInput() {
		t.Fatalf("got %q (bad input %v)", e.Error(), e.BadInput())
	}
	oom := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: 1, Tail: []string{"ggml_cuda: out of memory", "[ERROR] main.cpp:952  - generate failed"}}}
	if oom.BadInput() || !regexp.MustCompile(`generate failed$`).MatchString(oom.Error()) {
		t.Fatalf("oom: %v bad input %v", oom, oom.BadInput())
	}
	// A Flux-style load warns that a text encoder is "not found"; a later
	// out-of-memory failure with exit 1 is still transient.
	flux := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: 1, Tail: []string{
		"[WARN ] conditioner.hpp:1055 - clip_l text encoder not found! Prompt adherence might be degraded.",
		"ggml_cuda: out of memory", "[ERROR] main.cpp:952  - generate failed"}}}
	if flux.BadInput() {
		t.Fatalf("flux warning made an out-of-memory failure permanent: %v", flux)
	}
	// An abort is bad input only for the C++ runtime's number exception,
	// not for any marker line (a failed GGML_ASSERT aborts too).
	assert := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: -1, Signal: "aborted", Tail: []string{
		"CUDA error: an illegal memory access was encountered", "GGML_ASSERT(x) failed"}}}
	oor := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: -1, Signal: "aborted", Tail: []string{
		"terminate called after throwing an instance of 'std::out_of_range'", "  what():  stoi"}}}
	if assert.BadInput() || !oor.BadInput() {
		t.Fatalf("abort: assert bad input %v, out of range bad input %v", assert.BadInput(), oor.BadInput())
	}
	sig := &CLIError{ExitError: &runner.ExitError{Name: "m", Code: -1, Signal: "killed", Tail: []string{"x"}}}
	if sig.Error() != "engine m killed by signal killed: x" || sig.BadInput() {
		t.Fatalf("signal: %v", sig)
	}
}

// testEngine is the stand-in engine, run as sd-cli by --test-role.
func testEngine(t testing.TB) string { return filepath.Join(enginetest.StandIn(t), "llama-server") }

func TestMain(m *testing.M) {
	code := m.Run()
	enginetest.Cleanup()
	os.Exit(code)
}

// -m may name a diffusers directory, which stable-diffusion.cpp loads
// (model_loader.cpp: "load … using diffusers format") when it holds
// unet/diffusion_pytorch_model.safetensors; without it the load fails as
// for a file that is no model, bad input.
func TestRunCLI_DiffusersDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	err := RunCLI(context.Background(), cliRun(t, Files{Model: dir}, smallRequest(), t.TempDir()))
	var ce *CLIError
	if !errors.As(err, &ce) || !ce.BadInput() || !strings.Contains(ce.Error(), "unet/diffusion_pytorch_model.safetensors") {
		t.Fatalf("RunCLI with an empty directory: %v; want bad input naming the unet file", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "unet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"), []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := RunCLI(context.Background(), cliRun(t, Files{Model: dir}, smallRequest(), out)); err != nil {
		t.Fatalf("RunCLI with a diffusers directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "out.png")); err != nil {
		t.Fatal(err)
	}
}
