package config

import (
	"reflect"
	"testing"
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
    - name: srv
      model_path: ./x
      config: {engine: sd-server, steps: 120}
    - name: cli
      model_path: ./x
      config: {engine: sd-cli, steps: 120}
`, nil)
	requireProblems(t, problems,
		"models.diffusion[0].model_path: required (or config.diffusion_model",
		`models.diffusion[1].config.sampling_method: unknown name "euler a"; one of euler, euler_a`,
		`models.diffusion[1].config.scheduler: unknown name "-x"`,
		"models.diffusion[1].config.timeout_seconds: must be at least 0, got -1",
		"models.diffusion[2].config.steps: 120 is more than sd-server runs (100",
	)
	if len(problems) != 5 {
		t.Fatalf("problems %q", problems)
	}
}
