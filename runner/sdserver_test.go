package runner

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// sdServerConfig runs the stand-in as sd-server.
func sdServerConfig(t *testing.T, extra ...string) Config {
	t.Helper()
	return Config{
		Name:   "sd-server-a",
		Binary: testEngine,
		ArgsFunc: SDServerArgs(SDServerOptions{
			Files: SDFiles{Model: sdModel(t)}, Width: 64, Height: 64, Steps: 2, CFGScale: 7,
			Extra: append([]string{"--test-role", "sd-server"}, extra...),
		}),
		ReadyPath:         SDServerReadyPath,
		ReadyTimeout:      20 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  5 * time.Second,
		StopGrace:         5 * time.Second,
		Logger:            testLogger(t),
	}
}

func TestSDServerArgs(t *testing.T) {
	t.Parallel()
	got := SDServerArgs(SDServerOptions{
		Files: SDFiles{DiffusionModel: "/m/z.gguf", LLM: "/m/qwen.gguf", VAE: "/m/ae.sft"}, Width: 1024, Height: 768,
		Steps: 8, CFGScale: 1, SamplingMethod: "euler", Scheduler: "simple", Extra: []string{"--diffusion-fa"},
	})(4321)
	want := strings.Fields("--diffusion-model /m/z.gguf --vae /m/ae.sft --llm /m/qwen.gguf --listen-ip 127.0.0.1 --listen-port 4321 " +
		"-W 1024 -H 768 --steps 8 --cfg-scale 1 --sampling-method euler --scheduler simple --diffusion-fa")
	if !slices.Equal(got, want) {
		t.Fatalf("args\n got %q\nwant %q", got, want)
	}
	got = SDServerArgs(SDServerOptions{Files: SDFiles{Model: "/m/sd.safetensors"}})(1)
	if want := strings.Fields("-m /m/sd.safetensors --listen-ip 127.0.0.1 --listen-port 1"); !slices.Equal(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
}

func TestSDPrompt(t *testing.T) {
	t.Parallel()
	p, err := SDPrompt(SDImageRequest{Prompt: "a cat <sd_cpp_extra_args>{\"seed\":1}</sd_cpp_extra_args>", NegativePrompt: "dog",
		Steps: 4, CFGScale: 1.5, Seed: 99, SamplingMethod: "euler"})
	if err != nil {
		t.Fatal(err)
	}
	want := `a cat {"seed":1} <sd_cpp_extra_args>{"negative_prompt":"dog","seed":99,"sample_params":` +
		`{"sample_steps":4,"sample_method":"euler","guidance":{"txt_cfg":1.5}}}</sd_cpp_extra_args>`
	if p != want {
		t.Fatalf("prompt\n got %s\nwant %s", p, want)
	}
}

func TestProcess_GenerateImages(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-load-delay", "50ms"))
	req := SDImageRequest{Prompt: "a lighthouse", NegativePrompt: "fog", Width: 96, Height: 64, Steps: 3, CFGScale: 5, Seed: 3, Count: 2}
	images, err := p.GenerateImages(context.Background(), req)
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
	again, err := p.GenerateImages(context.Background(), req)
	if err != nil || !bytes.Equal(again[0], images[0]) {
		t.Fatalf("same request, different image (%v)", err)
	}

	req.Width = 0 // sd-server: 400 {"error":"invalid params"}
	_, err = p.GenerateImages(context.Background(), req)
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusBadRequest || he.Message != "invalid params" {
		t.Fatalf("err %v, want 400 invalid params", err)
	}
}

func TestProcess_SDServerLoadsBeforeListening(t *testing.T) {
	t.Parallel()
	cfg := sdServerConfig(t, "--test-fail-load")
	p := start(t, cfg)
	err := p.WaitReady(context.Background())
	var ee *ExitError
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
		_, _ = p.GenerateImages(context.Background(), SDImageRequest{Prompt: "x", Width: 64, Height: 64, Steps: 50, Count: 1})
	}()
	begin := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No SIGTERM handler: it dies at once even while generating.
	if took := time.Since(begin); took >= cfg.StopGrace {
		t.Fatalf("Stop took %s", took)
	}
	if !errors.Is(p.Err(), ErrStopped) {
		t.Fatalf("Err %v", p.Err())
	}
}

func TestProcess_GenerateImagesEngineDies(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-crash-at-step", "2"))
	_, err := p.GenerateImages(context.Background(), SDImageRequest{Prompt: "x", Width: 64, Height: 64, Steps: 4, Count: 1})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("err %v, want the engine's exit", err)
	}
}

func TestProcess_SDServerExitsOnItsOwn(t *testing.T) {
	t.Parallel()
	p := startReady(t, sdServerConfig(t, "--test-exit-after", "300ms"))
	waitDone(t, p, 10*time.Second)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) || ee.Code != 3 || ee.BeforeReady {
		t.Fatalf("Err %v", p.Err())
	}
}
