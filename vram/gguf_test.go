package vram

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// GGUF value types (gguf.md).
const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufString  = 8
	ggufArray   = 9
)

// GGML tensor types.
const (
	ggmlF32 = 0
	ggmlF16 = 1
)

type ggufKV struct {
	key string
	val any // uint32, int32, float32, string, []string, []float32, []int32
}

type ggufTensor struct {
	name string
	dims []uint64 // ne0 first, as GGUF stores them
	typ  uint32
}

func (t ggufTensor) size() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	if t.typ == ggmlF16 {
		return n * 2
	}
	return n * 4
}

// writeGGUF writes a GGUF v3 file: header, metadata, tensor infos, padding to
// the alignment, then zeroed tensor data, each tensor aligned.
func writeGGUF(t *testing.T, path string, kvs []ggufKV, tensors []ggufTensor) {
	t.Helper()
	const align = 32
	var b bytes.Buffer
	le := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	str := func(s string) {
		le(uint64(len(s)))
		b.WriteString(s)
	}
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(len(tensors)))
	le(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		switch v := kv.val.(type) {
		case uint32:
			le(uint32(ggufUint32))
			le(v)
		case uint64:
			le(uint32(10)) // GGUF uint64
			le(v)
		case int32:
			le(uint32(ggufInt32))
			le(v)
		case float32:
			le(uint32(ggufFloat32))
			le(v)
		case string:
			le(uint32(ggufString))
			str(v)
		case []string:
			le(uint32(ggufArray))
			le(uint32(ggufString))
			le(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []float32:
			le(uint32(ggufArray))
			le(uint32(ggufFloat32))
			le(uint64(len(v)))
			le(v)
		case []int32:
			le(uint32(ggufArray))
			le(uint32(ggufInt32))
			le(uint64(len(v)))
			le(v)
		default:
			t.Fatalf("writeGGUF: unsupported value %T for %s", v, kv.key)
		}
	}
	var offset uint64
	for _, ti := range tensors {
		str(ti.name)
		le(uint32(len(ti.dims)))
		le(ti.dims)
		le(ti.typ)
		le(offset)
		offset += (ti.size() + align - 1) / align * align
	}
	b.Write(make([]byte, (align-b.Len()%align)%align))
	b.Write(make([]byte, offset))
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tinyLlama describes a 2-layer llama: n_embd 64, 4 heads (4 KV heads, head
// size 16), n_ff 128, 32 tokens, trained on 2048 tokens. Its KV cache in f16
// is n_layer × (n_embd_k_gqa + n_embd_v_gqa) × 2 bytes = 2 × 128 × 2 = 512
// bytes per cell.
const (
	tinyLayers  = 2
	tinyEmbd    = 64
	tinyFF      = 128
	tinyVocab   = 32
	tinyTrain   = 2048
	tinyKVBytes = tinyLayers * (tinyEmbd + tinyEmbd) * 2
)

func tinyLlamaKVs() []ggufKV {
	tokens := make([]string, tinyVocab)
	scores := make([]float32, tinyVocab)
	types := make([]int32, tinyVocab)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("<t%d>", i)
		types[i] = 1
	}
	tokens[0], tokens[1], tokens[2] = "<unk>", "<s>", "</s>"
	types[0], types[1], types[2] = 2, 3, 3
	return []ggufKV{
		{"general.architecture", "llama"},
		{"general.name", "tiny"},
		{"general.alignment", uint32(32)},
		{"llama.context_length", uint32(tinyTrain)},
		{"llama.embedding_length", uint32(tinyEmbd)},
		{"llama.block_count", uint32(tinyLayers)},
		{"llama.feed_forward_length", uint32(tinyFF)},
		{"llama.attention.head_count", uint32(4)},
		{"llama.attention.head_count_kv", uint32(4)},
		{"llama.rope.dimension_count", uint32(16)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.vocab_size", uint32(tinyVocab)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
	}
}

func tinyLlamaTensors() []ggufTensor {
	ts := []ggufTensor{
		{"token_embd.weight", []uint64{tinyEmbd, tinyVocab}, ggmlF16},
		{"output_norm.weight", []uint64{tinyEmbd}, ggmlF32},
		{"output.weight", []uint64{tinyEmbd, tinyVocab}, ggmlF16},
	}
	for i := range tinyLayers {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			ggufTensor{p + "attn_norm.weight", []uint64{tinyEmbd}, ggmlF32},
			ggufTensor{p + "attn_q.weight", []uint64{tinyEmbd, tinyEmbd}, ggmlF16},
			ggufTensor{p + "attn_k.weight", []uint64{tinyEmbd, tinyEmbd}, ggmlF16},
			ggufTensor{p + "attn_v.weight", []uint64{tinyEmbd, tinyEmbd}, ggmlF16},
			ggufTensor{p + "attn_output.weight", []uint64{tinyEmbd, tinyEmbd}, ggmlF16},
			ggufTensor{p + "ffn_norm.weight", []uint64{tinyEmbd}, ggmlF32},
			ggufTensor{p + "ffn_gate.weight", []uint64{tinyEmbd, tinyFF}, ggmlF16},
			ggufTensor{p + "ffn_up.weight", []uint64{tinyEmbd, tinyFF}, ggmlF16},
			ggufTensor{p + "ffn_down.weight", []uint64{tinyFF, tinyEmbd}, ggmlF16},
		)
	}
	return ts
}

func writeTinyLlama(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	writeGGUF(t, path, tinyLlamaKVs(), tinyLlamaTensors())
	return path
}

func estimate(t *testing.T, path string, o EstimateOptions) Estimate {
	t.Helper()
	e, err := EstimateGGUF(path, o)
	if err != nil {
		t.Fatalf("EstimateGGUF(%+v): %v", o, err)
	}
	return e
}

func TestEstimateGGUF_TinyLlama(t *testing.T) {
	t.Parallel()
	path := writeTinyLlama(t)
	e := estimate(t, path, EstimateOptions{ContextSize: 2048, Parallel: 1, GPULayers: -1})
	t.Logf("estimate: %+v", e)
	if e.Architecture != "llama" || e.Layers != tinyLayers || e.TrainContext != tinyTrain {
		t.Errorf("metadata: arch %q layers %d train %d", e.Architecture, e.Layers, e.TrainContext)
	}
	if !e.FullOffload || e.OffloadLayers != tinyLayers {
		t.Errorf("offload: full %v layers %d, want full with %d", e.FullOffload, e.OffloadLayers, tinyLayers)
	}
	if e.ContextSize != 2048 || e.SlotContext != 2048 {
		t.Errorf("context %d/%d, want 2048/2048", e.ContextSize, e.SlotContext)
	}
	if want := ceilMiB(2048 * tinyKVBytes); e.KVCacheMB != want {
		t.Errorf("KVCacheMB = %d, want %d", e.KVCacheMB, want)
	}
	if e.WeightsMB < 1 || e.ComputeMB < 1 {
		t.Errorf("weights %d MiB, compute %d MiB: want both counted", e.WeightsMB, e.ComputeMB)
	}
	if sum := e.WeightsMB + e.KVCacheMB + e.ComputeMB; e.VRAMMB < sum-2 || e.VRAMMB > sum+1 {
		// The parts are rounded up one by one, the total once.
		t.Errorf("VRAMMB = %d, parts sum to %d", e.VRAMMB, sum)
	}

	withMargin := estimate(t, path, EstimateOptions{ContextSize: 2048, GPULayers: -1, MarginMB: 512})
	if withMargin.VRAMMB != e.VRAMMB+512 || withMargin.MarginMB != 512 {
		t.Errorf("margin: VRAMMB %d, want %d", withMargin.VRAMMB, e.VRAMMB+512)
	}

	cpu := estimate(t, path, EstimateOptions{ContextSize: 2048, GPULayers: 0})
	// With -ngl 0 llama.cpp still runs big batches on the GPU, so a compute
	// buffer remains there.
	if cpu.OffloadLayers != 0 || cpu.FullOffload || cpu.VRAMMB > e.VRAMMB {
		t.Errorf("-ngl 0: %+v, want no offload and no more VRAM than %d", cpu, e.VRAMMB)
	}
	if cpu.KVCacheMB != 0 || cpu.WeightsMB != 0 {
		t.Errorf("-ngl 0 puts KV %d MiB and weights %d MiB on the GPU", cpu.KVCacheMB, cpu.WeightsMB)
	}
}

func TestEstimateGGUF_GrowsWithContext(t *testing.T) {
	t.Parallel()
	path := writeTinyLlama(t)
	prev := Estimate{}
	for _, c := range []int{256, 2048, 8192, 32768, 65536} {
		e := estimate(t, path, EstimateOptions{ContextSize: c, Parallel: 1, GPULayers: -1})
		// llama.cpp: n_ctx × n_layer × (n_embd_k_gqa + n_embd_v_gqa) × 2 bytes.
		if want := ceilMiB(uint64(c) * tinyKVBytes); e.KVCacheMB != want {
			t.Errorf("-c %d: KVCacheMB = %d, want %d (linear in context)", c, e.KVCacheMB, want)
		}
		if e.ContextSize != c {
			t.Errorf("-c %d: ContextSize = %d", c, e.ContextSize)
		}
		if e.VRAMMB < prev.VRAMMB || e.KVCacheMB < prev.KVCacheMB {
			t.Errorf("-c %d: VRAM %d MiB KV %d MiB, less than at a smaller context (%d, %d)",
				c, e.VRAMMB, e.KVCacheMB, prev.VRAMMB, prev.KVCacheMB)
		}
		prev = e
	}
	small := estimate(t, path, EstimateOptions{ContextSize: 256, GPULayers: -1})
	if prev.VRAMMB <= small.VRAMMB {
		t.Errorf("VRAM at -c 65536 (%d MiB) not above -c 256 (%d MiB)", prev.VRAMMB, small.VRAMMB)
	}

	// -c 0 is the training context; -c 300 is padded to 512.
	if e := estimate(t, path, EstimateOptions{GPULayers: -1}); e.ContextSize != tinyTrain {
		t.Errorf("-c 0: ContextSize = %d, want %d", e.ContextSize, tinyTrain)
	}
	if e := estimate(t, path, EstimateOptions{ContextSize: 300, GPULayers: -1}); e.ContextSize != 512 {
		t.Errorf("-c 300: ContextSize = %d, want 512", e.ContextSize)
	}
}

func TestEstimateGGUF_Parallel(t *testing.T) {
	t.Parallel()
	path := writeTinyLlama(t)
	// Slots share -c; each gets pad(c/n, 256) cells, so the cache only grows
	// when that rounding adds cells: llama.cpp logs "n_ctx is not divisible
	// by n_seq_max - rounding down to 512" for -c 256 --parallel 2 and then
	// allocates 512 cells.
	tests := []struct {
		ctx, parallel   int
		unified         bool
		wantCtx, wantSl int
	}{
		{256, 1, false, 256, 256},
		{256, 2, false, 512, 256},
		{256, 4, false, 1024, 256},
		{2048, 1, false, 2048, 2048},
		{2048, 4, false, 2048, 512},
		{2048, 3, false, 2304, 768},
		{8192, 2, false, 8192, 4096},
		{256, 4, true, 256, 256},
		{2048, 4, true, 2048, 2048},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("c%d_np%d_unified%v", tt.ctx, tt.parallel, tt.unified), func(t *testing.T) {
			t.Parallel()
			e := estimate(t, path, EstimateOptions{ContextSize: tt.ctx, Parallel: tt.parallel, KVUnified: tt.unified, GPULayers: -1})
			if e.ContextSize != tt.wantCtx || e.SlotContext != tt.wantSl {
				t.Errorf("cells %d per slot %d, want %d and %d", e.ContextSize, e.SlotContext, tt.wantCtx, tt.wantSl)
			}
			if want := ceilMiB(uint64(tt.wantCtx) * tinyKVBytes); e.KVCacheMB != want {
				t.Errorf("KVCacheMB = %d, want %d", e.KVCacheMB, want)
			}
		})
	}

	// Monotonic in slots at a fixed -c.
	for _, c := range []int{256, 2048} {
		prev := Estimate{}
		for _, np := range []int{1, 2, 4, 8} {
			e := estimate(t, path, EstimateOptions{ContextSize: c, Parallel: np, GPULayers: -1})
			if e.VRAMMB < prev.VRAMMB || e.KVCacheMB < prev.KVCacheMB {
				t.Errorf("-c %d --parallel %d: VRAM %d KV %d, less than with fewer slots (%d, %d)",
					c, np, e.VRAMMB, e.KVCacheMB, prev.VRAMMB, prev.KVCacheMB)
			}
			prev = e
		}
	}
	// 16 slots of at least 256 cells each need twice the cells of -c 2048.
	one := estimate(t, path, EstimateOptions{ContextSize: 2048, Parallel: 1, GPULayers: -1})
	many := estimate(t, path, EstimateOptions{ContextSize: 2048, Parallel: 16, GPULayers: -1})
	if many.ContextSize != 2*one.ContextSize || many.KVCacheMB != 2*one.KVCacheMB {
		t.Errorf("-c 2048: 16 slots have %d cells, %d MiB of KV; 1 slot %d cells, %d MiB: want twice",
			many.ContextSize, many.KVCacheMB, one.ContextSize, one.KVCacheMB)
	}
}

func TestEstimateGGUF_CacheTypes(t *testing.T) {
	t.Parallel()
	path := writeTinyLlama(t)
	const c = 65536
	f16 := estimate(t, path, EstimateOptions{ContextSize: c, GPULayers: -1})
	f32 := estimate(t, path, EstimateOptions{ContextSize: c, GPULayers: -1, CacheTypeK: "f32", CacheTypeV: "F32"})
	q8 := estimate(t, path, EstimateOptions{ContextSize: c, GPULayers: -1, CacheTypeK: "q8_0", CacheTypeV: "q8_0", FlashAttention: true})
	if f32.KVCacheMB != 2*f16.KVCacheMB {
		t.Errorf("f32 KV %d MiB, want twice f16's %d", f32.KVCacheMB, f16.KVCacheMB)
	}
	// q8_0: 34 bytes per 32 values.
	if want := ceilMiB(uint64(c) * tinyLayers * 2 * tinyEmbd / 32 * 34); q8.KVCacheMB != want {
		t.Errorf("q8_0 KV %d MiB, want %d", q8.KVCacheMB, want)
	}
	if _, err := EstimateGGUF(path, EstimateOptions{CacheTypeK: "q3_k"}); err == nil || !strings.Contains(err.Error(), "q3_k") {
		t.Errorf("unknown cache type: err = %v", err)
	}
}

func TestEstimateGGUF_Rejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noArch := filepath.Join(dir, "noarch.gguf")
	writeGGUF(t, noArch, tinyLlamaKVs()[1:], tinyLlamaTensors())
	vocabOnly := filepath.Join(dir, "vocab.gguf")
	writeGGUF(t, vocabOnly, tinyLlamaKVs(), nil)
	noBlocks := filepath.Join(dir, "noblocks.gguf")
	writeGGUF(t, noBlocks, tinyLlamaKVs(), tinyLlamaTensors()[:3])
	truncated := writeTinyLlama(t)
	data, err := os.ReadFile(truncated)
	if err != nil {
		t.Fatal(err)
	}
	truncated = write("truncated.gguf", data[:len(data)/2])

	tests := []struct {
		name, path, reason string
	}{
		{"Empty", write("empty.gguf", nil), "empty file"},
		{"Garbage", write("garbage.gguf", bytes.Repeat([]byte("not a model "), 100)), "invalid GGUF format"},
		{"MagicOnly", write("magic.gguf", []byte("GGUF")), "version"},
		{"Safetensors", write("model.safetensors", []byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      ")), "invalid GGUF format"},
		{"NoArchitecture", noArch, "general.architecture"},
		{"VocabOnly", vocabOnly, "no tensors"},
		{"NoBlocks", noBlocks, "blk"},
		{"Truncated", truncated, ""},
		{"Directory", dir, "directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := EstimateGGUF(tt.path, EstimateOptions{ContextSize: 256, GPULayers: -1})
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrNotGGUFModel) {
				t.Errorf("err = %v, want ErrNotGGUFModel", err)
			}
			if want := tt.path + " is not a GGUF model file: "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %q, want prefix %q", err, want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %q, want it to mention %q", err, tt.reason)
			}
		})
	}

	_, err = EstimateGGUF(filepath.Join(dir, "missing.gguf"), EstimateOptions{})
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrNotGGUFModel) {
		t.Errorf("missing file: err = %v, want not-exist and not ErrNotGGUFModel", err)
	}
}

// TestEstimateGGUF_File prints the estimate for a real model named by
// GGUF_MODEL, e.g. GGUF_MODEL=/work/llama/tiny.gguf.
func TestEstimateGGUF_File(t *testing.T) {
	path := os.Getenv("GGUF_MODEL")
	if path == "" {
		t.Skip("GGUF_MODEL not set")
	}
	for _, c := range []int{256, 2048} {
		for _, np := range []int{1, 4} {
			for _, fa := range []bool{false, true} {
				e := estimate(t, path, EstimateOptions{ContextSize: c, Parallel: np, GPULayers: -1, FlashAttention: fa})
				t.Logf("-c %d --parallel %d -ngl all -fa %v: VRAM %d MiB (weights %d, KV %d, compute %d), RAM %d MiB, cells %d (%d per slot), arch %s, %d/%d layers, full %v",
					c, np, fa, e.VRAMMB, e.WeightsMB, e.KVCacheMB, e.ComputeMB, e.RAMMB, e.ContextSize, e.SlotContext,
					e.Architecture, e.OffloadLayers, e.Layers, e.FullOffload)
			}
		}
	}
}
