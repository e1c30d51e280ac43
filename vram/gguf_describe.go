package vram

import (
	"fmt"
	"strings"
)

// Description is what a GGUF file says about its model, for model lists
// (Ollama's /api/tags and /api/show).
type Description struct {
	Architecture  string // "llama", "qwen2", …
	ParameterSize string // "7.6B"
	Quantization  string // "Q4_K_M"
}

// DescribeGGUF reads the metadata of the GGUF file at path. Returns an
// error wrapping ErrNotGGUFModel when the file is not a GGUF model.
func DescribeGGUF(path string) (d Description, err error) {
	defer parserPanic(path, &err)
	gf, err := parseGGUF(path)
	if err != nil {
		return Description{}, err
	}
	md := gf.Metadata()
	d = Description{Architecture: md.Architecture, Quantization: md.FileType.String()}
	if d.Quantization != "" {
		d.Quantization = strings.TrimPrefix(strings.ToUpper(d.Quantization), "MOSTLY_")
	}
	if md.Parameters > 0 {
		d.ParameterSize = strings.ReplaceAll(fmt.Sprint(md.Parameters), " ", "")
	}
	return d, nil
}
