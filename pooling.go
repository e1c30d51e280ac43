package main

import (
	"fmt"
	"io"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/vram"
)

// defaultPooling is what an embeddings model gets when config.pooling is
// left out and its GGUF declares no pooling type: llama-server would then
// pool with "none", which its OpenAI route /v1/embeddings refuses.
const defaultPooling = "mean"

// llmPooling is the --pooling an embeddings model runs with and where it
// comes from: config.pooling, else the GGUF's own pooling type, else mean.
// A model without embeddings gets none ("").
func llmPooling(m config.LLMModel) (pooling, from string) {
	if !m.Config.Embeddings {
		return "", ""
	}
	if m.Config.Pooling != "" {
		return m.Config.Pooling, "config.pooling"
	}
	if own, err := vram.PoolingType(m.ModelPath); err == nil && own != "" {
		return own, "the GGUF's own"
	}
	return defaultPooling, "default: the GGUF declares none"
}

// printPooling lists, for vramcram check, the pooling of each embeddings
// model.
func printPooling(cfg *config.Config, w io.Writer) {
	first := true
	for _, m := range cfg.Models.LLM {
		pooling, from := llmPooling(m)
		if pooling == "" || m.Config.Engine != llamacpp.Name {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nembeddings:")
			first = false
		}
		fmt.Fprintf(w, "  %s: --embeddings --pooling %s (%s)\n", m.Name, pooling, from)
	}
}
