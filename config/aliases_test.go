package config

import (
	"reflect"
	"testing"
)

func TestLoadConfig_Aliases(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
models:
  llm:
    - {name: qwen, aliases: ["qwen2.5:7b", gpt-4o-mini], model_path: ./q.gguf}
  diffusion:
    - {name: sd, aliases: [dall-e-3], model_path: ./sd.safetensors}
`, nil)
	want := map[string]string{"qwen2.5:7b": "qwen", "gpt-4o-mini": "qwen", "dall-e-3": "sd"}
	if got := Aliases(cfg); !reflect.DeepEqual(got, want) {
		t.Fatalf("aliases = %v, want %v", got, want)
	}
	serves := ServesRoute(cfg, map[string][]string{"sd": {"/v1/images/generations"}})
	if !serves("qwen", "/v1/messages") || serves("sd", "/v1/messages") {
		t.Fatal("servesRoute: llama-server models serve llama-server's routes, diffusion models do not")
	}
	cmdCfg := mustLoad(t, `
models:
  llm:
    - name: whisper
      model_path: ./w.bin
      vram_mb: 600
      config: {engine: command, cmd: [/bin/true, "${PORT}"], routes: [/v1/audio/transcriptions]}
`, nil)
	serves = ServesRoute(cmdCfg, map[string][]string{"whisper": {"/v1/audio/transcriptions"}})
	if !serves("whisper", "/v1/audio/transcriptions") || serves("whisper", "/tokenize") {
		t.Fatal("servesRoute: a command model serves exactly its config.routes")
	}

	problems := loadProblems(t, `
models:
  llm:
    - {name: a, aliases: [b, x, x], model_path: ./a.gguf}
    - {name: b, aliases: ["bad/alias", a], model_path: ./b.gguf}
  diffusion:
    - {name: sd, aliases: [x], model_path: ./sd.safetensors}
`, nil)
	requireProblems(t, problems,
		`models.llm[0].aliases[0]: "b" is already used by models.llm[1]`,
		`models.llm[0].aliases[2]: "x" is already used by models.llm[0].aliases[1]`,
		`models.llm[1].aliases[0]: "bad/alias" is not a valid alias`,
		`models.llm[1].aliases[1]: "a" is already used by models.llm[0]`,
		`models.diffusion[0].aliases[0]: "x" is already used by models.llm[0].aliases[1]`,
	)
}
