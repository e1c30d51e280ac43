package config

import (
	"slices"
	"strings"
	"testing"
)

func TestLoadConfig_CommandModel(t *testing.T) {
	t.Parallel()
	cfg, err := Load("testdata/command.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := cfg.LLMByName("whisper")
	c := w.Config
	if c.Engine != "command" || len(c.Cmd) != 7 || c.Cmd[4] != "${PORT}" || c.Env["OMP_NUM_THREADS"] != "4" ||
		c.Env["VISIBLE"] != "${GPUS}" || c.HealthPath != "/ready" || !slices.Equal(c.Routes, []string{"/v1/audio/transcriptions"}) {
		t.Fatalf("whisper config %+v", c)
	}
	if o, _ := cfg.LLMByName("own"); o.Config.Engine != "llama-server" || o.Config.Binary != "/opt/llama-cuda/bin/llama-server" {
		t.Fatalf("own config %+v", o.Config)
	}
}

func TestLoadConfig_CommandModelProblems(t *testing.T) {
	t.Parallel()
	problems := loadProblems(t, `
models:
  llm:
    - name: a
      model_path: ./a.gguf
      config: {cmd: [x], env: {A: b}, routes: [/v1/x]}
    - name: b
      config: {engine: command, binary: /x}
    - name: c
      config:
        engine: command
        cmd: [/opt/s, --port, "${PORT}", "${MODEL_DIR}", "${HOST"]
        env: {"1BAD": x, GOOD: "${NOPE}"}
        health_path: health
        routes: [v1/chat]
    - name: d
      config: {engine: command, cmd: [/opt/s, --listen]}
  diffusion:
    - name: e
      config: {engine: comand}
`, nil)
	want := []string{
		"models.llm[0].config.cmd: only with config.engine: command",
		"models.llm[0].config.env: only with config.engine: command",
		"models.llm[0].config.routes: only with config.engine: command",
		"models.llm[1].config.binary: only for engine llama-server",
		"models.llm[1].config.cmd: required with config.engine: command",
		"models.llm[2].config.cmd[3]: ${MODEL_DIR}: unknown macro; known: ${PORT}, ${HOST}, ${MODEL_PATH}, ${MODEL_NAME}, ${GPUS}, ${CONTEXT_SIZE}",
		"models.llm[2].config.cmd[4]: ${HOST: unterminated macro",
		"models.llm[2].config.env.1BAD: not a valid environment variable name",
		"models.llm[2].config.env.GOOD: ${NOPE}: unknown macro",
		`models.llm[2].config.health_path: must start with '/', got "health"`,
		`models.llm[2].config.routes[0]: must be a path starting with '/', got "v1/chat"`,
		"models.llm[3].config.cmd: must use ${PORT} (in cmd or env)",
		`models.diffusion[0].config.engine: must be one of sd-cli, sd-server, command, got "comand"`,
		"models.diffusion[0].model_path: required",
	}
	requireProblems(t, problems, want...)
	if len(problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n  %s", len(problems), len(want), strings.Join(problems, "\n  "))
	}
}
