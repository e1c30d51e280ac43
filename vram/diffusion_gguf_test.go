package vram

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinySD describes an SD 1.x-like GGUF: the tensor names the parser keys on
// (a UNet attention block of width 768, a CLIP ViT-L/14 layer and a VAE
// decoder conv_in of 512 channels) and one large UNet tensor, 8 MiB in f32.
func tinySDTensors() []ggufTensor {
	return []ggufTensor{
		{"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_v.weight", []uint64{768, 320}, ggmlF16},
		{"model.diffusion_model.input_blocks.1.0.in_layers.2.weight", []uint64{1024, 2048}, ggmlF32},
		{"cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.k_proj.weight", []uint64{768, 768}, ggmlF16},
		{"first_stage_model.decoder.conv_in.weight", []uint64{3, 3, 4, 512}, ggmlF32},
	}
}

func writeTinySD(t *testing.T) (string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny-sd.gguf")
	ts := tinySDTensors()
	writeGGUF(t, path, []ggufKV{{"general.name", "tiny-sd"}, {"general.alignment", uint32(32)}}, ts)
	var bytes uint64
	for _, ti := range ts {
		bytes += ti.size()
	}
	return path, bytes
}

func TestEstimateDiffusionGGUF_TinySD(t *testing.T) {
	path, weights := writeTinySD(t)
	e, err := EstimateDiffusionGGUF(DiffusionFiles{Model: path}, DiffusionEstimateOptions{MarginMB: 512})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("512×512: %+v (weights %d bytes)", e, weights)
	if e.Architecture != "Stable Diffusion 1.x" {
		t.Errorf("architecture %q, want Stable Diffusion 1.x", e.Architecture)
	}
	if want := ceilMiB(weights); e.WeightsMB != want {
		t.Errorf("weights %d MiB, want %d (the tensors' bytes)", e.WeightsMB, want)
	}
	// Weights, margin, and compute buffers for the UNet, CLIP and the VAE
	// decoder at 512×512 (the VAE alone: 512·512·13·512 bytes = 1,664 MiB).
	if e.VRAMMB < e.WeightsMB+512+1664 {
		t.Errorf("VRAM %d MiB, want at least weights %d + margin 512 + VAE decode 1664", e.VRAMMB, e.WeightsMB)
	}
	big, err := EstimateDiffusionGGUF(DiffusionFiles{Model: path}, DiffusionEstimateOptions{Width: 1024, Height: 1024, MarginMB: 512})
	if err != nil {
		t.Fatal(err)
	}
	if big.VRAMMB <= e.VRAMMB || big.WeightsMB != e.WeightsMB {
		t.Errorf("1024×1024: VRAM %d MiB, weights %d; 512×512: %d, %d: want more compute, same weights", big.VRAMMB, big.WeightsMB, e.VRAMMB, e.WeightsMB)
	}
}

func TestEstimateDiffusionGGUF_NoEstimate(t *testing.T) {
	dir := t.TempDir()
	safetensors := filepath.Join(dir, "model.safetensors")
	header := `{"__metadata__":{"format":"pt"}}`
	if err := os.WriteFile(safetensors, append([]byte{byte(len(header)), 0, 0, 0, 0, 0, 0, 0}, header...), 0o644); err != nil {
		t.Fatal(err)
	}
	sd, _ := writeTinySD(t)
	cases := []struct {
		name   string
		files  DiffusionFiles
		reason string
	}{
		{"safetensors", DiffusionFiles{Model: safetensors}, "not a GGUF file"},
		{"an LLM", DiffusionFiles{Model: writeTinyLlama(t)}, "not a diffusion model"},
		{"parts apart", DiffusionFiles{Model: sd, Parts: []string{filepath.Join(dir, "vae.safetensors")}}, "separate files"},
		{"no model_path", DiffusionFiles{}, "no model_path"},
	}
	for _, c := range cases {
		_, err := EstimateDiffusionGGUF(c.files, DiffusionEstimateOptions{})
		if !errors.Is(err, ErrNoDiffusionEstimate) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: err = %v, want ErrNoDiffusionEstimate mentioning %q", c.name, err, c.reason)
		}
	}
	_, err := EstimateDiffusionGGUF(DiffusionFiles{Model: filepath.Join(dir, "missing.gguf")}, DiffusionEstimateOptions{})
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrNoDiffusionEstimate) {
		t.Errorf("missing file: err = %v, want not-exist, not ErrNoDiffusionEstimate", err)
	}
}
