package main

import (
	"log/slog"
	"slices"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/vram"
)

// estimateDiffusion fills EstimateMB of a diffusion model stored as one GGUF
// file. Any other (safetensors, parts in separate files) has no estimate: it
// reserves the whole budget unless vram_mb is set, which is logged.
func estimateDiffusion(d config.DiffusionModel, m *scheduler.Model, log *slog.Logger) {
	c := d.Config
	parts := slices.DeleteFunc([]string{c.DiffusionModel, c.VAE, c.ClipL, c.ClipG, c.T5XXL, c.LLM}, func(p string) bool { return p == "" })
	est, err := vram.EstimateDiffusionGGUF(vram.DiffusionFiles{Model: d.ModelPath, Parts: parts},
		vram.DiffusionEstimateOptions{Width: c.Width, Height: c.Height, MarginMB: estimateMarginMB})
	switch {
	case err != nil && m.VRAMMB == 0:
		log.Warn("no VRAM figure for diffusion model: it will reserve the whole budget unless vram_mb is set", "model", m.Name, "err", err)
	case err == nil:
		m.EstimateMB = est.VRAMMB
		log.Info("VRAM estimate from GGUF", "model", m.Name, "vram_estimate_mb", est.VRAMMB, "vram_mb", m.VRAMMB,
			"weights_mb", est.WeightsMB, "architecture", est.Architecture)
	}
}
