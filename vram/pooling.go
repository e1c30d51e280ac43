package vram

import (
	"fmt"

	gguf "github.com/gpustack/gguf-parser-go"
)

// poolingNames are llama.cpp's pooling types by their GGUF value
// (enum llama_pooling_type) as --pooling spells them.
var poolingNames = []string{"none", "mean", "cls", "last", "rank"}

// PoolingType returns the pooling type a GGUF model declares in its
// "<arch>.pooling_type" key ("none", "mean", "cls", "last" or "rank"), or
// "" when it declares none (a model meant for generation). Errors: the file
// cannot be read or is not a GGUF.
func PoolingType(path string) (_ string, err error) {
	defer parserPanic(path, &err)
	gf, err := parseGGUF(path)
	if err != nil {
		return "", fmt.Errorf("read GGUF %s: %w", path, err)
	}
	arch, ok := gf.Header.MetadataKV.Get("general.architecture")
	if !ok || arch.ValueType != gguf.GGUFMetadataValueTypeString {
		return "", nil
	}
	kv, ok := gf.Header.MetadataKV.Get(arch.ValueString() + ".pooling_type")
	if !ok {
		return "", nil
	}
	var v uint64
	switch kv.ValueType {
	case gguf.GGUFMetadataValueTypeUint32:
		v = uint64(kv.ValueUint32())
	case gguf.GGUFMetadataValueTypeInt32:
		v = uint64(max(kv.ValueInt32(), 0))
	default:
		return "", fmt.Errorf("read GGUF %s: pooling_type is of type %v", path, kv.ValueType)
	}
	if v >= uint64(len(poolingNames)) {
		return "", fmt.Errorf("read GGUF %s: unknown pooling_type %d", path, v)
	}
	return poolingNames[v], nil
}
