package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/store"
)

func writeCheckConfig(t *testing.T, dir string) string {
	t.Helper()
	model := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(model, []byte("not a gguf"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `storage: {data_dir: ` + filepath.Join(dir, "data") + `}
vram: {total_mb: 10000, safety_margin_mb: 1000}
models:
  llm:
    - name: small
      model_path: ` + model + `
      vram_mb: 4000
    - name: huge
      model_path: ` + model + `
      vram_mb: 12000
    - name: guess
      model_path: ` + model + `
`
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck_PrintsFiguresAndFit(t *testing.T) {
	dir := t.TempDir()
	path := writeCheckConfig(t, dir)
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o750); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "data", storeFile), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetLearnedVRAM(learnKey(cfg, "small"), 4700); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{
		"budget 9000 MiB",
		"4700 MiB (learned)",
		"NO: needs 12000 MiB, budget 9000 MiB",
		"9000 MiB (unknown: whole budget)",
		"guess", // and a note on why it has no estimate
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, "notes:") {
		t.Errorf("no note on the model without an estimate:\n%s", text)
	}
}

func TestCheck_InvalidConfigExitsNonZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("vram: {totl_mb: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "vram.totl_mb") {
		t.Fatalf("error does not name the key: %s", errOut.String())
	}
}

func TestLearnKey_ChangesWithEngineOptions(t *testing.T) {
	a := &config.Config{Models: config.ModelsConfig{LLM: []config.LLMModel{{Name: "m", ModelPath: "/x.gguf", Config: config.LLMEngineConfig{ContextSize: 4096}}}}}
	b := &config.Config{Models: config.ModelsConfig{LLM: []config.LLMModel{{Name: "m", ModelPath: "/x.gguf", Config: config.LLMEngineConfig{ContextSize: 8192}}}}}
	if learnKey(a, "m") == learnKey(b, "m") {
		t.Fatal("a larger context keeps the learned figure of the smaller one")
	}
	if learnKey(a, "m") != learnKey(a, "m") || !strings.HasPrefix(learnKey(a, "m"), "m@") {
		t.Fatalf("unstable key %q", learnKey(a, "m"))
	}
}

func TestCheck_TwoConfiguredGPUs(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(model, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `storage: {data_dir: ` + filepath.Join(dir, "data") + `}
vram: {safety_margin_mb: 1000, devices: [{index: 0, total_mb: 10000}, {index: 1, uuid: GPU-b, total_mb: 6000}]}
models:
  llm:
    - {name: split, model_path: ` + model + `, vram_mb: 9000, gpus: [0, 1]}
    - {name: toobig-on-1, model_path: ` + model + `, vram_mb: 6000, gpus: [1]}
    - {name: anywhere, model_path: ` + model + `, vram_mb: 8000}
`
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{"GPU 0 (0)", "GPU 1 (GPU-b)", "budget 5000 MiB", "NO: needs 6000 MiB on GPU 1, budget 5000 MiB"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if (strings.HasPrefix(line, "split ") || strings.HasPrefix(line, "anywhere ")) && !strings.HasSuffix(strings.TrimSpace(line), "yes") {
			t.Errorf("want yes: %s", line)
		}
	}
}

func TestFlashAttention(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--mmap", "off"}, true},
		{[]string{"-fa", "off"}, false},
		{[]string{"--flash-attn=off"}, false},
		{[]string{"-fa", "on"}, true},
		{[]string{"--flash-attn", "0"}, false},
	} {
		if got := flashAttention(tc.args); got != tc.want {
			t.Errorf("flashAttention(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestLearnKey_ChangesWithVRAMMB(t *testing.T) {
	a := &config.Config{Models: config.ModelsConfig{LLM: []config.LLMModel{{Name: "m", ModelPath: "/x.gguf", VRAMMB: 4000}}}}
	b := &config.Config{Models: config.ModelsConfig{LLM: []config.LLMModel{{Name: "m", ModelPath: "/x.gguf", VRAMMB: 6000}}}}
	if learnKey(a, "m") == learnKey(b, "m") {
		t.Fatal("a new vram_mb keeps the figure learned under the old one")
	}
}

// TestLearnKey_SameForConfigsWrittenBeforeEngines checks that the keys
// added with the engine registry (engine, binary, cmd, …) leave the learned
// figures of an existing configuration where they were: the key is
// computed as before (the engine config's fields of then, printed with %+v).
func TestLearnKey_SameForConfigsWrittenBeforeEngines(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
models:
  llm:
    - {name: a, model_path: ./a.gguf, vram_mb: 100, config: {parallel: 2, extra_args: [-fa, "on"]}}
  diffusion:
    - {name: sd, model_path: ./sd.safetensors, config: {steps: 4, vae: ./vae.sft}}
`, nil)
	type llmThen struct {
		ContextSize, GPULayers, Parallel int
		Embeddings                       bool
		ExtraArgs                        []string
	}
	type sdThen struct {
		Engine                                       string
		Width, Height, Steps                         int
		CFGScale                                     float64
		SamplingMethod                               string
		ExtraArgs                                    []string
		Scheduler, DiffusionModel, VAE, ClipL, ClipG string
		T5XXL, LLM                                   string
		TimeoutSeconds                               int
	}
	key := func(name, spec string) string {
		sum := sha256.Sum256([]byte(spec))
		return name + "@" + hex.EncodeToString(sum[:6])
	}
	wantA := key("a", fmt.Sprintf("llm|%s|%d|%+v", "./a.gguf", 100, llmThen{4096, 99, 2, false, []string{"-fa", "on"}}))
	wantSD := key("sd", fmt.Sprintf("diffusion|%s|%d|%+v", "./sd.safetensors", 0,
		sdThen{"sd-cli", 512, 512, 4, 7, "", nil, "", "", "./vae.sft", "", "", "", "", 600}))
	if got := learnKey(cfg, "a"); got != wantA {
		t.Errorf("llm key %s, want %s", got, wantA)
	}
	if got := learnKey(cfg, "sd"); got != wantSD {
		t.Errorf("diffusion key %s, want %s", got, wantSD)
	}
	// A new key that is set does change it.
	cfg.Models.LLM[0].Config.Binary = "/opt/other/llama-server"
	if learnKey(cfg, "a") == wantA {
		t.Error("config.binary does not change the key")
	}
}
