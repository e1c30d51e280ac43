package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vramcram/vramcram/config"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/runner"
)

// The wiring gives each model its engine, its endpoints and its kind.
func TestWiring_CommandModels(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("config/testdata/command.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The wiring gives each model its engine.
	reg, err := newRegistry(cfg, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	ac := apiConfig(cfg, reg, discardLog())
	if !slices.Equal(ac.Endpoints["whisper"], []string{"/v1/audio/transcriptions"}) ||
		!slices.Equal(ac.Endpoints["imgsrv"], []string{"/v1/images/generations"}) ||
		!slices.Equal(ac.Endpoints["own"], []string{"/v1/chat/completions", "/v1/completions"}) || ac.Embeddings["whisper"] {
		t.Fatalf("endpoints %v embeddings %v", ac.Endpoints, ac.Embeddings)
	}
	if !ac.RelayImages["imgsrv"] || ac.RelayImages["own"] || len(ac.RelayImages) != 1 {
		t.Fatalf("relay images %v; want imgsrv alone (an images server on the command engine)", ac.RelayImages)
	}
	for _, m := range schedulerConfig(cfg).Models {
		want := map[string]string{"whisper": "command", "own": "llama-server", "imgsrv": "command"}[m.Name]
		if m.Engine != want {
			t.Errorf("%s: engine %q, want %q", m.Name, m.Engine, want)
		}
	}
}

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

// The server guard keys reach the API's config.
func TestWiring_ServerGuards(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `server:
  body_idle_timeout_seconds: 2
  max_inflight_body_mb: 8
  max_event_clients: 4
`, []string{"VRAMCRAM_SERVER__MAX_EVENT_CLIENTS=5"})
	ac := apiConfig(cfg, engine.NewRegistry(), discardLog())
	guardAPIConfig(&ac, cfg)
	if ac.ListenHost != "127.0.0.1" || ac.BodyIdleTimeout != 2*time.Second || ac.MaxInflightBodyBytes != 8<<20 || ac.MaxEventClients != 5 {
		t.Fatalf("api config: %+v", ac)
	}
}
