package llamacpp

import (
	"slices"
	"testing"
)

func TestServerArgs_TensorSplit(t *testing.T) {
	args := ServerArgs(Options{ModelPath: "/m.gguf", GPULayers: 99, TensorSplit: []int{4500, 3000}, Extra: []string{"--foo"}})(8080)
	want := []string{"-m", "/m.gguf", "--host", "127.0.0.1", "--port", "8080", "-ngl", "99", "--split-mode", "layer", "--tensor-split", "4500,3000", "--foo"}
	if !slices.Equal(args, want) {
		t.Fatalf("args %q\nwant %q", args, want)
	}
	one := ServerArgs(Options{ModelPath: "/m.gguf", GPULayers: -1, TensorSplit: []int{4500}})(1)
	if slices.Contains(one, "--tensor-split") {
		t.Fatalf("one device, yet %q", one)
	}
}
