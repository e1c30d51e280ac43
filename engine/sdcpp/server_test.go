package sdcpp

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// sdServerConfig runs the stand-in as sd-server.
func sdServerConfig(t *testing.T, extra ...string) runner.Config {
	t.Helper()
	return runner.Config{
		Name:   "sd-server-a",
		Binary: testEngine(t),
		ArgsFunc: ServerArgs(ServerOptions{
			Files: Files{Model: sdModel(t)}, Width: 64, Height: 64, Steps: 2, CFGScale: 7,
			Extra: append([]string{"--test-role", "sd-server"}, extra...),
		}),
		ReadyPath:         ServerReadyPath,
		ReadyTimeout:      20 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  5 * time.Second,
		StopGrace:         5 * time.Second,
		Logger:            enginetest.Logger(t),
	}
}

func TestServerArgs(t *testing.T) {
	t.Parallel()
	got := ServerArgs(ServerOptions{
		Files: Files{DiffusionModel: "/m/z.gguf", LLM: "/m/qwen.gguf", VAE: "/m/ae.sft"}, Width: 1024, Height: 768,
		Steps: 8, CFGScale: 1, SamplingMethod: "euler", Scheduler: "simple", Extra: []string{"--diffusion-fa"},
	})(4321)
	want := strings.Fields("--diffusion-model /m/z.gguf --vae /m/ae.sft --llm /m/qwen.gguf --listen-ip 127.0.0.1 --listen-port 4321 " +
		"-W 1024 -H 768 --steps 8 --cfg-scale 1 --sampling-method euler --scheduler simple --diffusion-fa")
	if !slices.Equal(got, want) {
		t.Fatalf("args\n got %q\nwant %q", got, want)
	}
	got = ServerArgs(ServerOptions{Files: Files{Model: "/m/sd.safetensors"}})(1)
	if want := strings.Fields("-m /m/sd.safetensors --listen-ip 127.0.0.1 --listen-port 1"); !slices.Equal(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
}

func TestServerPrompt(t *testing.T) {
	t.Parallel()
	p, err := ServerPrompt(ImageRequest{Prompt: "a cat", NegativePrompt: "dog", Steps: 4, CFGScale: 1.5, Seed: 99, SamplingMethod: "euler"})
	if err != nil {
		t.Fatal(err)
	}
	want := `a cat <sd_cpp_extra_args>{"negative_prompt":"dog","seed":99,"sample_params":` +
		`{"sample_steps":4,"sample_method":"euler","guidance":{"txt_cfg":1.5}}}</sd_cpp_extra_args>`
	if p != want {
		t.Fatalf("prompt\n got %s\nwant %s", p, want)
	}
}

// TestServerPrompt_RefusesTag: text naming the tag, plain, nested (which a
// one-pass strip would rebuild), in other letter cases or in the negative
// prompt (which could close ours early), is a field error, never sent.
func TestServerPrompt_RefusesTag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ field, prompt, negative string }{
		{"prompt", `a cat <sd_cpp_extra_args>{"seed":1}</sd_cpp_extra_args>`, ""},
		{"prompt", `cat <sd_cpp_extra_<sd_cpp_extra_args>args>{"sample_params":{"sample_steps":60}}</sd_cpp_extra_</sd_cpp_extra_args>args>`, ""},
		{"prompt", `cat <SD_CPP_Extra_Args>{}</SD_CPP_Extra_Args>`, ""},
		{"params.negative_prompt", "cat", `dog"}</sd_cpp_extra_args><sd_cpp_extra_args>{"seed":7`},
	} {
		_, err := ServerPrompt(ImageRequest{Prompt: c.prompt, NegativePrompt: c.negative, Steps: 4})
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("prompt %q, negative %q: %v, want a field error for %s", c.prompt, c.negative, err, c.field)
		}
	}
	if !HasExtraArgsTag("x sd_cpp_EXTRA_args") || HasExtraArgsTag("sd cpp extra args") {
		t.Error("HasExtraArgsTag: wrong on letter case or on plain words")
	}
}

// A negative prompt full of <, > and & reaches sd-server's tag one byte per
// character (Go's default HTML escapes make each six, and sd-server's regex
// over a tag text of about 50 KB kills it); a tag text over the cap is the
// job's field error, never sent.
func TestServerPrompt_TagPayload(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t))
	neg := strings.Repeat("<&>", MaxNegativePrompt/3)
	prompt, err := ServerPrompt(ImageRequest{Prompt: "x", NegativePrompt: neg, Steps: 1})
	if err != nil || !strings.Contains(prompt, neg) {
		t.Fatalf("ServerPrompt: %v (negative prompt escaped?)", err)
	}
	if _, err := GenerateImages(context.Background(), p, ImageRequest{Prompt: "x", NegativePrompt: neg, Width: 64, Height: 64, Steps: 1, Count: 1}); err != nil {
		t.Fatalf("GenerateImages with a 10,000-character negative prompt: %v", err)
	}
	_, err = ServerPrompt(ImageRequest{Prompt: "x", NegativePrompt: strings.Repeat("\x01", MaxNegativePrompt), Steps: 1})
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Field != "params.negative_prompt" {
		t.Fatalf("control characters (6 bytes each once encoded): err %v, want a field error", err)
	}
}

func TestProcess_GenerateImages(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-load-delay", "50ms"))
	req := ImageRequest{Prompt: "a lighthouse", NegativePrompt: "fog", Width: 96, Height: 64, Steps: 3, CFGScale: 5, Seed: 3, Count: 2}
	images, err := GenerateImages(context.Background(), p, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 2 || bytes.Equal(images[0], images[1]) {
		t.Fatalf("%d images (want 2 different ones)", len(images))
	}
	for i, b := range images {
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		if s := img.Bounds().Size(); s.X != 96 || s.Y != 64 {
			t.Fatalf("image %d is %v", i, s)
		}
	}
	again, err := GenerateImages(context.Background(), p, req)
	if err != nil || !bytes.Equal(again[0], images[0]) {
		t.Fatalf("same request, different image (%v)", err)
	}

	req.CFGScale = -1 // sd-server: 400 {"error":"invalid params"} (a width of 0 would be 512)
	_, err = GenerateImages(context.Background(), p, req)
	var he *runner.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusBadRequest || he.Message != "invalid params" {
		t.Fatalf("err %v, want 400 invalid params", err)
	}
}

func TestProcess_SDServerLoadsBeforeListening(t *testing.T) {
	t.Parallel()
	cfg := sdServerConfig(t, "--test-fail-load")
	p := start(t, cfg)
	err := p.WaitReady(context.Background())
	var ee *runner.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !ee.BeforeReady || !strings.Contains(ee.Error(), "new_sd_ctx_t failed") {
		t.Fatalf("err %v, want exit 1 before ready", err)
	}
}

func TestProcess_SDServerDiesOnSigterm(t *testing.T) {
	t.Parallel()
	cfg := sdServerConfig(t, "--test-step-delay", "1s")
	cfg.StopGrace = 10 * time.Second
	p := startReady(t, cfg)
	go func() {
		_, _ = GenerateImages(context.Background(), p, ImageRequest{Prompt: "x", Width: 64, Height: 64, Steps: 50, Count: 1})
	}()
	begin := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No SIGTERM handler: it dies at once even while generating.
	if took := time.Since(begin); took >= cfg.StopGrace {
		t.Fatalf("Stop took %s", took)
	}
	if !errors.Is(p.Err(), runner.ErrStopped) {
		t.Fatalf("Err %v", p.Err())
	}
}

func TestProcess_GenerateImagesEngineDies(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-crash-at-step", "2"))
	_, err := GenerateImages(context.Background(), p, ImageRequest{Prompt: "x", Width: 64, Height: 64, Steps: 4, Count: 1})
	var ee *runner.ExitError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("err %v, want the engine's exit", err)
	}
}

func TestProcess_SDServerExitsOnItsOwn(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-exit-after", "300ms"))
	waitDone(t, p, 10*time.Second)
	var ee *runner.ExitError
	if !errors.As(p.Err(), &ee) || ee.Code != 3 || ee.BeforeReady {
		t.Fatalf("Err %v", p.Err())
	}
}

// start starts cfg and registers a cleanup that stops it.
func start(t *testing.T, cfg runner.Config) *runner.Process {
	t.Helper()
	p, err := runner.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return p
}

// startReady starts cfg and waits until it is ready.
func startReady(t *testing.T, cfg runner.Config) *runner.Process {
	t.Helper()
	p := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, strings.Join(p.Tail(), "\n"))
	}
	return p
}

// waitDone waits for p.Done.
func waitDone(t *testing.T, p *runner.Process, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatalf("engine not done after %s; tail:\n%s", timeout, strings.Join(p.Tail(), "\n"))
	}
}

// sd-server exits 0 without a word when its port is taken. An exit before
// ready, whatever its code, is a failed start: the port is found taken and
// the engine respawned on another one, as for llama-server.
func TestProcess_SDServerPortTakenExitsZero(t *testing.T) {
	t.Parallel()
	cfg := sdServerConfig(t)
	base := cfg.ArgsFunc
	var spawns atomic.Int32
	cfg.ArgsFunc = func(port int) []string {
		if spawns.Add(1) == 1 {
			holdPort(t, port) // taken by something that is not an sd-server
		}
		return base(port)
	}
	p := startReady(t, cfg)
	if spawns.Load() != 2 || p.State() != runner.StateReady {
		t.Fatalf("spawns %d, state %s", spawns.Load(), p.State())
	}
	if tail := strings.Join(p.Tail(), "\n"); !strings.Contains(tail, "listening on") {
		t.Fatalf("tail %q", tail)
	}
}

// holdPort listens on port and closes every connection at once (a probe
// gets no answer) until the test ends.
func holdPort(t *testing.T, port int) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Errorf("hold port %d: %v", port, err)
		return
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}
