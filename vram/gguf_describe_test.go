package vram

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDescribeGGUF(t *testing.T) {
	t.Parallel()
	d, err := DescribeGGUF(writeTinyLlama(t))
	if err != nil {
		t.Fatal(err)
	}
	if d.Architecture != "llama" || d.ParameterSize == "" || d.Quantization == "" {
		t.Fatalf("description %+v", d)
	}
	t.Logf("%+v", d)
	bad := filepath.Join(t.TempDir(), "x.gguf")
	_ = os.WriteFile(bad, []byte("stand-in"), 0o644)
	if _, err := DescribeGGUF(bad); err == nil || errors.Is(err, nil) {
		t.Fatalf("not a GGUF file: %v", err)
	}
}
