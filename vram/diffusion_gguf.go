package vram

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	gguf "github.com/gpustack/gguf-parser-go"
)

// ErrNoDiffusionEstimate is matched (errors.Is) by the error
// EstimateDiffusionGGUF returns when it cannot estimate a diffusion model:
// its file is not a GGUF diffusion model (safetensors, ckpt, an LLM), or its
// parts are in separate files. The model then needs vram_mb, or it reserves
// the whole budget.
var ErrNoDiffusionEstimate = errors.New("no VRAM estimate for this diffusion model")

// DiffusionFiles are the files of a stable-diffusion.cpp model: Model
// (model_path, -m) and the parts given on their own (--diffusion-model,
// --vae, --clip_l, --clip_g, --t5xxl, --llm).
type DiffusionFiles struct {
	Model string
	Parts []string
}

// DiffusionEstimateOptions are the settings that size sd-cli's memory.
type DiffusionEstimateOptions struct {
	// Width and Height are the image size; 0 means 512.
	Width, Height int
	// MarginMB is added to VRAMMB (CUDA context, library workspaces).
	MarginMB int
}

// DiffusionEstimate is what stable-diffusion.cpp is expected to hold on the
// GPU, in MiB rounded up.
type DiffusionEstimate struct {
	// VRAMMB is the reservation: weights, compute buffers and MarginMB.
	VRAMMB int
	// WeightsMB is the weights of the diffusion model, its text encoders
	// and its VAE.
	WeightsMB int
	MarginMB  int
	// Architecture is the variant the parser recognised ("Stable Diffusion
	// 1.x", "Stable Diffusion XL", "FLUX.1", …).
	Architecture string
}

// EstimateDiffusionGGUF estimates what stable-diffusion.cpp needs to run a
// model stored as one GGUF file (diffusion model, text encoders and VAE
// together), with everything on the GPU, using gguf-parser-go's
// stable-diffusion.cpp estimate (metadata only).
//
// It returns an error matching ErrNoDiffusionEstimate when the model has
// parts in separate files or its file is not a GGUF diffusion model, and an
// error wrapping *fs.PathError when the file cannot be read.
func EstimateDiffusionGGUF(f DiffusionFiles, o DiffusionEstimateOptions) (est DiffusionEstimate, err error) {
	defer parserPanic(f.Model, &err)
	if len(f.Parts) > 0 {
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, "its parts are in separate files (diffusion_model, vae, clip_l, t5xxl, …)")
	}
	if f.Model == "" {
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, "no model_path")
	}
	if _, err := os.Stat(f.Model); err != nil {
		return DiffusionEstimate{}, fmt.Errorf("estimate: %w", err)
	}
	gf, err := parseGGUF(f.Model)
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr):
		return DiffusionEstimate{}, fmt.Errorf("estimate %s: %w", f.Model, err)
	case err != nil:
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, "not a GGUF file (safetensors or ckpt?): "+err.Error())
	}
	a := gf.Architecture()
	if a.Architecture != "diffusion" {
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, fmt.Sprintf("a GGUF %s %s, not a diffusion model", a.Architecture, a.Type))
	}
	if a.DiffusionArchitecture == "" {
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, "a GGUF diffusion model of a kind the estimator does not know")
	}
	run, err := estimateDiffusionRun(gf, o)
	if err != nil {
		return DiffusionEstimate{}, noDiffusionEstimate(f.Model, err.Error())
	}
	sum := run.SummarizeItem(false, 0, 0)
	if len(sum.VRAMs) < 1 {
		return DiffusionEstimate{}, fmt.Errorf("estimate %s: parser returned no GPU device", f.Model)
	}
	margin := max(o.MarginMB, 0)
	return DiffusionEstimate{
		VRAMMB:       ceilMiB(uint64(sum.VRAMs[0].NonUMA)) + margin,
		WeightsMB:    ceilMiB(diffusionWeights(run)),
		MarginMB:     margin,
		Architecture: a.DiffusionArchitecture,
	}, nil
}

// estimateDiffusionRun runs the parser's estimate for one GPU, turning a
// panic (it indexes tensors it expects to find) into an error.
func estimateDiffusionRun(gf *gguf.GGUFFile, o DiffusionEstimateOptions) (e gguf.StableDiffusionCppRunEstimate, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser panic: %v", r)
		}
	}()
	side := func(n int) uint32 {
		if n <= 0 {
			return 512
		}
		return uint32(min(n, 1<<16))
	}
	return gf.EstimateStableDiffusionCppRun(
		gguf.WithStableDiffusionCppWidth(side(o.Width)),
		gguf.WithStableDiffusionCppHeight(side(o.Height)),
	), nil
}

// diffusionWeights adds the weights on the GPU of the model and its parts.
func diffusionWeights(e gguf.StableDiffusionCppRunEstimate) uint64 {
	var n uint64
	for _, d := range e.Devices[1:] {
		n += uint64(d.Weight)
	}
	if e.Autoencoder != nil {
		n += diffusionWeights(*e.Autoencoder)
	}
	for _, c := range e.Conditioners {
		n += diffusionWeights(c)
	}
	return n
}

// noDiffusionEstimateError says why a diffusion model has no estimate.
type noDiffusionEstimateError struct{ path, reason string }

func noDiffusionEstimate(path, reason string) error {
	return &noDiffusionEstimateError{path: path, reason: reason}
}

func (e *noDiffusionEstimateError) Error() string {
	name := e.path
	if strings.TrimSpace(name) == "" {
		name = "diffusion model"
	}
	return "no VRAM estimate for " + name + ": " + e.reason
}

func (e *noDiffusionEstimateError) Is(target error) bool { return target == ErrNoDiffusionEstimate }
