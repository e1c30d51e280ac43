package vram

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPoolingType(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mean := filepath.Join(dir, "embed.gguf")
	writeGGUF(t, mean, poolingKVs(uint32(1)), []ggufTensor{{name: "token_embd.weight", dims: []uint64{8, 4}}})
	if got, err := PoolingType(mean); err != nil || got != "mean" {
		t.Fatalf("PoolingType(mean) = %q, %v", got, err)
	}
	plain := filepath.Join(dir, "plain.gguf")
	writeGGUF(t, plain, poolingKVs(nil), []ggufTensor{{name: "token_embd.weight", dims: []uint64{8, 4}}})
	if got, err := PoolingType(plain); err != nil || got != "" {
		t.Fatalf("PoolingType(plain) = %q, %v", got, err)
	}
	junk := filepath.Join(dir, "junk.gguf")
	if err := os.WriteFile(junk, []byte("GGUF stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PoolingType(junk); err == nil {
		t.Fatal("no error for a file that is not a GGUF")
	}
}

// poolingKVs is a minimal llama metadata, with pooling_type when p is set.
func poolingKVs(p any) []ggufKV {
	kvs := []ggufKV{{"general.architecture", "llama"}, {"llama.block_count", uint32(1)}}
	if p != nil {
		kvs = append(kvs, ggufKV{"llama.pooling_type", p})
	}
	return kvs
}
