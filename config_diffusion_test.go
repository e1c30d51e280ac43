package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/runner"
)

func TestLoadConfig_DiffusionModel(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
models:
  diffusion:
    - name: flux
      config:
        engine: sd-server
        diffusion_model: ./flux.gguf
        vae: ./ae.sft
        clip_l: ./clip_l.sft
        clip_g: ./clip_g.sft
        t5xxl: ./t5.gguf
        llm: ./qwen.gguf
        scheduler: karras
        sampling_method: dpm++2m
        timeout_seconds: 0
`, nil)
	m := cfg.Models.Diffusion[0]
	want := DiffusionEngineConfig{Engine: "sd-server", Width: 512, Height: 512, Steps: 20, CFGScale: 7,
		SamplingMethod: "dpm++2m", Scheduler: "karras", DiffusionModel: "./flux.gguf", VAE: "./ae.sft",
		ClipL: "./clip_l.sft", ClipG: "./clip_g.sft", T5XXL: "./t5.gguf", LLM: "./qwen.gguf"}
	if m.ModelPath != "" || !reflect.DeepEqual(m.Config, want) {
		t.Fatalf("config %+v", m)
	}
	if d := mustLoad(t, "models: {diffusion: [{name: sd, model_path: ./sd}]}", nil).Models.Diffusion[0]; d.Config.TimeoutSeconds != 600 {
		t.Fatalf("default timeout %d", d.Config.TimeoutSeconds)
	}

	problems := loadProblems(t, `
models:
  diffusion:
    - name: none
    - name: bad
      model_path: ./x
      config: {sampling_method: "euler a", scheduler: "-x", timeout_seconds: -1}
`, nil)
	requireProblems(t, problems,
		"models.diffusion[0].model_path: required (or config.diffusion_model",
		`models.diffusion[1].config.sampling_method: unknown name "euler a"; one of euler, euler_a`,
		`models.diffusion[1].config.scheduler: unknown name "-x"`,
		"models.diffusion[1].config.timeout_seconds: must be at least 0, got -1",
	)
	if len(problems) != 4 {
		t.Fatalf("problems %q", problems)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestDiffusionLauncher_Wiring(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := mustLoad(t, `
storage: {data_dir: `+dir+`}
inference: {sd_path: /opt/sd-cli, sd_server_path: /opt/sd-server}
models:
  diffusion:
    - name: sd
      model_path: ./sd.safetensors
      config: {width: 768, steps: 4, cfg_scale: 1.5, scheduler: karras, extra_args: [--vae-tiling], timeout_seconds: 30, vae: ./vae.sft}
`, nil)
	l := diffusionLauncher(cfg, nil, runner.Config{})
	o := l.Options["sd"]
	if l.CLIBinary != "/opt/sd-cli" || l.ServerBinary != "/opt/sd-server" || l.ImageDir != filepath.Join(dir, "images") ||
		o.Engine != "sd-cli" || o.Files != (sdcpp.Files{Model: "./sd.safetensors", VAE: "./vae.sft"}) ||
		o.Defaults != (sdcpp.Defaults{Width: 768, Height: 512, Steps: 4, CFGScale: 1.5, Scheduler: "karras"}) ||
		!slices.Equal(o.Extra, []string{"--vae-tiling"}) || o.Timeout != 30*time.Second {
		t.Fatalf("launcher %+v, options %+v", l, o)
	}
	if apiConfig(cfg, engine.NewRegistry(), discardLog()).ImageDir != l.ImageDir {
		t.Fatal("API and engines disagree on the image directory")
	}
	// The registry sends sd-cli models to it.
	ls, err := newRegistry(cfg, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	sp := engine.Spec{Model: "sd", Engine: "sd-cli", Kind: engine.KindDiffusion}
	err = ls.Check(sp)
	if err == nil || err.Error() != `sd-cli binary "/opt/sd-cli" not found (inference.sd_path)` {
		t.Fatalf("check: %v", err)
	}
	if _, err := ls.Launch(context.Background(), sp); !errors.Is(err, runner.ErrBinaryNotFound) {
		t.Fatalf("launch: %v", err)
	}
	if _, err := os.Stat(l.ImageDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image dir created before any job: %v", err)
	}
}
