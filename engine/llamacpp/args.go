package llamacpp

import (
	"strconv"
	"strings"
)

// Options are the llama-server settings VramCram decides per model.
type Options struct {
	// Binary, when set, is this model's llama-server (config.binary),
	// overriding Launcher.Binary.
	Binary      string
	ModelPath   string
	ContextSize int // -c; 0 leaves the engine's default (the model's training context)
	// GPULayers is -ngl; a negative value leaves it out (the engine's
	// default, "auto", which fits itself to whatever VRAM is free). Zero
	// means CPU only. VramCram sets it from its ledger, so it says it
	// explicitly.
	GPULayers  int
	Parallel   int  // --parallel (slots); 0 leaves the engine's default
	Embeddings bool // --embeddings: serve /v1/embeddings
	// TensorSplit, for a model split over several GPUs, is each visible
	// device's share (MiB): --split-mode layer --tensor-split a,b,…
	TensorSplit []int
	Extra       []string // appended last, verbatim (per-model extra_args)
	// Alias is --alias: the model name in llama-server's answers (the
	// "model" of its OpenAI routes); empty leaves the file path.
	Alias string
}

// ServerArgs returns a runner ArgsFunc for llama-server:
//
//	-m PATH --host 127.0.0.1 --port P [-c CTX] [-ngl N] [--parallel S] [--embeddings]
//	  [--split-mode layer --tensor-split A,B] [--alias NAME] extra...
//
// Extra comes last so a per-model setting can override ours (llama-server
// keeps the last value of a repeated flag).
func ServerArgs(o Options) func(port int) []string {
	extra := append([]string(nil), o.Extra...)
	return func(port int) []string {
		args := []string{"-m", o.ModelPath, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
		if o.ContextSize > 0 {
			args = append(args, "-c", strconv.Itoa(o.ContextSize))
		}
		if o.GPULayers >= 0 {
			args = append(args, "-ngl", strconv.Itoa(o.GPULayers))
		}
		if o.Parallel > 0 {
			args = append(args, "--parallel", strconv.Itoa(o.Parallel))
		}
		if o.Embeddings {
			args = append(args, "--embeddings")
		}
		if len(o.TensorSplit) > 1 {
			parts := make([]string, len(o.TensorSplit))
			for k, mb := range o.TensorSplit {
				parts[k] = strconv.Itoa(mb)
			}
			args = append(args, "--split-mode", "layer", "--tensor-split", strings.Join(parts, ","))
		}
		if o.Alias != "" {
			args = append(args, "--alias", o.Alias)
		}
		return append(args, extra...)
	}
}
