package runner

import "strconv"

// LlamaOptions are the llama-server settings VramCram decides per model.
type LlamaOptions struct {
	ModelPath   string
	ContextSize int // -c; 0 leaves the engine's default (the model's training context)
	// GPULayers is -ngl; a negative value leaves it out (the engine's
	// default, "auto", which fits itself to whatever VRAM is free). Zero
	// means CPU only. VramCram sets it from its ledger, so it says it
	// explicitly.
	GPULayers  int
	Parallel   int      // --parallel (slots); 0 leaves the engine's default
	Embeddings bool     // --embeddings: serve /v1/embeddings
	Extra      []string // appended last, verbatim (per-model extra_args)
	// Alias is --alias: the model name in llama-server's answers (the
	// "model" of its OpenAI routes); empty leaves the file path.
	Alias string
}

// LlamaServerArgs returns an ArgsFunc for llama-server:
//
//	-m PATH --host 127.0.0.1 --port P [-c CTX] [-ngl N] [--parallel S] [--embeddings] [--alias NAME] extra...
//
// Extra comes last so a per-model setting can override ours (llama-server
// keeps the last value of a repeated flag).
func LlamaServerArgs(o LlamaOptions) func(port int) []string {
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
		if o.Alias != "" {
			args = append(args, "--alias", o.Alias)
		}
		return append(args, extra...)
	}
}
