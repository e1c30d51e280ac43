package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/vram"
)

// modelFileInfo describes each model's file for the API's model lists
// (Ollama's /api/tags and /api/show): size and time from the file system,
// family, parameter count and quantization from GGUF metadata when the file
// has them; empty otherwise.
func modelFileInfo(cfg *config.Config) map[string]api.ModelInfo {
	out := map[string]api.ModelInfo{}
	for _, m := range cfg.Models.LLM {
		info := fileInfo(m.ModelPath)
		info.ContextSize = m.Config.ContextSize
		if d, err := vram.DescribeGGUF(m.ModelPath); err == nil {
			info.Format, info.Family, info.ParameterSize, info.Quantization = "gguf", d.Architecture, d.ParameterSize, d.Quantization
		}
		out[m.Name] = info
	}
	for _, m := range cfg.Models.Diffusion {
		out[m.Name] = fileInfo(m.ModelPath)
	}
	return out
}

// fileInfo is the size, time and format (by extension) of path.
func fileInfo(path string) api.ModelInfo {
	var info api.ModelInfo
	if st, err := os.Stat(path); err == nil {
		info.SizeBytes, info.ModifiedAt = st.Size(), st.ModTime()
	}
	info.Format = strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	return info
}
