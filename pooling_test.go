package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/runner"
)

// An embeddings model gets --pooling: config.pooling, else the GGUF's own,
// else mean (llama-server's OpenAI route refuses pooling none); check shows
// which.
func TestPooling_ArgvAndCheck(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(file, []byte("not a GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	llm := func(name string, emb bool, pooling string) LLMModel {
		return LLMModel{Name: name, ModelPath: file, Config: LLMEngineConfig{ContextSize: 512, Parallel: 1,
			Engine: llamacpp.Name, Embeddings: emb, Pooling: pooling}}
	}
	cfg := &Config{Models: ModelsConfig{LLM: []LLMModel{
		llm("dflt", true, ""), llm("cls", true, "cls"), llm("chat", false, ""),
	}}}
	l := llamaLauncher(cfg, nil, runner.Config{})
	for name, want := range map[string][]string{
		"dflt": {"--embeddings", "--pooling", "mean"},
		"cls":  {"--embeddings", "--pooling", "cls"},
		"chat": nil,
	} {
		if got := l.Options[name].Extra; !slices.Equal(got, want) {
			t.Errorf("%s: extra %q, want %q", name, got, want)
		}
	}
	var out bytes.Buffer
	printPooling(cfg, &out)
	text := out.String()
	for _, want := range []string{
		"dflt: --embeddings --pooling mean (default: the GGUF declares none)",
		"cls: --embeddings --pooling cls (config.pooling)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("check output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "chat") {
		t.Errorf("a model without embeddings is listed:\n%s", text)
	}
}
