package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSDGGUF writes a GGUF v3 file with no metadata and the zeroed f32
// tensors given (name → dims, ne0 first): enough for the estimator to see
// an SD 1.x model.
func writeSDGGUF(t *testing.T, path string) {
	t.Helper()
	tensors := []struct {
		name string
		dims []uint64
	}{
		{"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_v.weight", []uint64{768, 320}},
		{"cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.k_proj.weight", []uint64{768, 768}},
		{"first_stage_model.decoder.conv_in.weight", []uint64{3, 3, 4, 512}},
	}
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(len(tensors)))
	le(uint64(0))
	var offset uint64
	for _, ti := range tensors {
		le(uint64(len(ti.name)))
		b.WriteString(ti.name)
		le(uint32(len(ti.dims)))
		le(ti.dims)
		le(uint32(0)) // f32
		le(offset)
		n := uint64(4)
		for _, d := range ti.dims {
			n *= d
		}
		offset += (n + 31) / 32 * 32
	}
	b.Write(make([]byte, (32-b.Len()%32)%32))
	b.Write(make([]byte, offset))
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// vramcram check estimates a diffusion model in one GGUF file, and says
// that one in safetensors without vram_mb reserves the whole budget.
func TestCheck_DiffusionEstimate(t *testing.T) {
	dir := t.TempDir()
	gguf, st := filepath.Join(dir, "sd.gguf"), filepath.Join(dir, "sd.safetensors")
	writeSDGGUF(t, gguf)
	if err := os.WriteFile(st, []byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `storage: {data_dir: ` + filepath.Join(dir, "data") + `}
vram: {total_mb: 10000, safety_margin_mb: 1000}
models:
  diffusion:
    - {name: sdgguf, model_path: ` + gguf + `}
    - {name: sdsafe, model_path: ` + st + `}
    - {name: sdsized, model_path: ` + st + `, vram_mb: 3000}
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
	lines := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = l
		}
	}
	if l := lines["sdgguf"]; !strings.Contains(l, "(estimated)") {
		t.Errorf("sdgguf: %q, want an estimate\n%s", l, text)
	}
	if l := lines["sdsafe"]; !strings.Contains(l, "9000 MiB (unknown: whole budget)") {
		t.Errorf("sdsafe: %q, want the whole budget\n%s", l, text)
	}
	if !strings.Contains(text, "reserve the whole budget unless vram_mb is set") || !strings.Contains(text, "model=sdsafe") {
		t.Errorf("no note that sdsafe reserves the whole budget:\n%s", text)
	}
	if strings.Contains(text, "model=sdsized") || strings.Contains(text, "model=sdgguf") {
		t.Errorf("a note on a model with a figure:\n%s", text)
	}
}
