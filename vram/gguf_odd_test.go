package vram

import (
	"path/filepath"
	"testing"
)

func withKV(kvs []ggufKV, key string, v any) []ggufKV {
	out := []ggufKV{}
	for _, kv := range kvs {
		if kv.key != key {
			out = append(out, kv)
		}
	}
	return append(out, ggufKV{key, v})
}

func catch(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// Metadata of an unexpected type (a pooling_type stored as int32, an empty
// head_count array, a non-string architecture) is an error from every
// reader of GGUF files, never a panic: the parser's accessors panic on
// such values, outside the parse, and took the daemon down at start-up or
// on a reload.
func TestGGUF_OddMetadataIsAnErrorNotAPanic(t *testing.T) {
	cases := []struct {
		name string
		kvs  []ggufKV
	}{
		{"pooling_type int32", withKV(tinyLlamaKVs(), "llama.pooling_type", int32(1))},
		{"head_count empty array", withKV(tinyLlamaKVs(), "llama.attention.head_count", []int32{})},
		{"general.architecture uint32", withKV(tinyLlamaKVs(), "general.architecture", uint32(7))},
		{"general.name uint32", withKV(tinyLlamaKVs(), "general.name", uint32(7))},
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "m.gguf")
		writeGGUF(t, path, c.kvs, tinyLlamaTensors())
		if p := catch(func() { _, _ = EstimateGGUF(path, EstimateOptions{GPULayers: -1}) }); p != nil {
			t.Errorf("%s: EstimateGGUF panicked: %v", c.name, p)
		}
		if p := catch(func() { _, _ = EstimateDiffusionGGUF(DiffusionFiles{Model: path}, DiffusionEstimateOptions{}) }); p != nil {
			t.Errorf("%s: EstimateDiffusionGGUF panicked: %v", c.name, p)
		}
		if p := catch(func() { _, _ = DescribeGGUF(path) }); p != nil {
			t.Errorf("%s: DescribeGGUF panicked: %v", c.name, p)
		}
		if p := catch(func() { _, _ = PoolingType(path) }); p != nil {
			t.Errorf("%s: PoolingType panicked: %v", c.name, p)
		}
	}
}

// A context_length past what any engine takes is clamped: the estimate
// stays positive and grows (it overflowed to a negative context).
func TestEstimateGGUF_HugeContextLength(t *testing.T) {
	for _, c := range []uint64{1 << 40, 1 << 63, 1<<64 - 1} {
		path := filepath.Join(t.TempDir(), "m.gguf")
		writeGGUF(t, path, withKV(tinyLlamaKVs(), "llama.context_length", c), tinyLlamaTensors())
		e, err := EstimateGGUF(path, EstimateOptions{GPULayers: -1})
		if err != nil || e.ContextSize <= 0 || e.SlotContext <= 0 || e.VRAMMB <= 0 {
			t.Errorf("context_length %d: %+v, %v", c, e, err)
		}
	}
}
