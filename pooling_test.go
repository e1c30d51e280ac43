package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/engine"
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
	llm := func(name string, emb bool, pooling string) config.LLMModel {
		return config.LLMModel{Name: name, ModelPath: file, Config: config.LLMEngineConfig{ContextSize: 512, Parallel: 1,
			Engine: llamacpp.Name, Embeddings: emb, Pooling: pooling}}
	}
	cfg := &config.Config{Models: config.ModelsConfig{LLM: []config.LLMModel{
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

// With a real llama-server and a GGUF without a pooling type (LLAMA_MODEL),
// embeddings: true alone serves /v1/embeddings: VramCram passes
// --pooling mean, where --embeddings alone gets 400 "Pooling type 'none'
// is not OAI compatible".
func TestPooling_RealLlamaServer(t *testing.T) {
	bin, model := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL")
	if bin == "" || model == "" {
		t.Skip("set LLAMA_SERVER and LLAMA_MODEL to run against a real llama-server")
	}
	cfg := &config.Config{Inference: config.InferenceConfig{LlamaServerPath: bin}, Models: config.ModelsConfig{LLM: []config.LLMModel{{Name: "emb", ModelPath: model,
		Config: config.LLMEngineConfig{ContextSize: 512, Parallel: 1, Engine: llamacpp.Name, Embeddings: true}}}}}
	l := llamaLauncher(cfg, nil, runner.Config{ReadyTimeout: time.Minute, HeartbeatInterval: time.Second,
		HeartbeatTimeout: 10 * time.Second, StopGrace: 5 * time.Second})
	eng, err := l.Launch(context.Background(), engine.Spec{Model: "emb", Engine: llamacpp.Name, Kind: engine.KindLLM})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.Stop(context.Background()) }()
	if err := eng.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(eng.(engine.URLer).URL()+"/v1/embeddings", "application/json", strings.NewReader(`{"input":"hello world"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"embedding"`) {
		t.Fatalf("%d %.300s", resp.StatusCode, b)
	}
}
