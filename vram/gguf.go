package vram

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	gguf "github.com/gpustack/gguf-parser-go"
)

// ErrNotGGUFModel is matched (errors.Is) by the error EstimateGGUF returns for
// a file that is not a GGUF model llama.cpp could load: not GGUF at all,
// empty, truncated, or a GGUF without an architecture or tensors (a vocab-only
// file, a projector, a LoRA adapter, a diffusion model).
var ErrNotGGUFModel = errors.New("not a GGUF model file")

// EstimateOptions are the llama-server flags that size its memory. The zero
// value is `-c 0 -ngl 0 --parallel 1`: the training context, nothing on the
// GPU. Set GPULayers to -1 (or a large number) for a full offload.
type EstimateOptions struct {
	// ContextSize is -c, the total context shared by all slots; 0 means the
	// model's training context, as in llama.cpp.
	ContextSize int
	// Parallel is --parallel, the number of slots; 0 means 1.
	Parallel int
	// GPULayers is -ngl: the number of layers on the GPU, counting the output
	// layer as llama.cpp does; negative means all.
	GPULayers int
	// CacheTypeK and CacheTypeV are -ctk and -ctv ("f16", "q8_0", …); "" is f16.
	CacheTypeK, CacheTypeV string
	// FlashAttention prices the compute buffer with flash attention (-fa on),
	// which is smaller. llama.cpp's default, -fa auto, turns it on where the
	// backend supports it; leaving this false over-estimates, never under.
	FlashAttention bool
	// KVUnified is --kv-unified: one cache of ContextSize cells that the slots
	// share, instead of one stream per slot.
	KVUnified bool
	// MarginMB is added to VRAMMB. The parser does not count the CUDA context
	// and cuBLAS workspace (a few hundred MiB per process that NVML charges
	// to it); the margin is the place for them.
	MarginMB int
}

// Estimate is what llama-server is expected to hold with some options, from
// the GGUF metadata. Figures are MiB on the first GPU, rounded up.
type Estimate struct {
	// VRAMMB is the reservation: WeightsMB + KVCacheMB + ComputeMB + the
	// parser's per-device footprint + MarginMB.
	VRAMMB int
	// WeightsMB is the model weights offloaded to the GPU.
	WeightsMB int
	// KVCacheMB is the KV cache (and recurrent state) on the GPU.
	KVCacheMB int
	// ComputeMB is the compute graph's buffers on the GPU.
	ComputeMB int
	// MarginMB is EstimateOptions.MarginMB as applied.
	MarginMB int
	// RAMMB is host memory outside the page cache (tokenizer, output buffer,
	// layers left on the CPU). Not part of the VRAM reservation.
	RAMMB int

	// ContextSize is the number of KV cells llama.cpp allocates across all
	// slots: -c padded to 256 and, unless KVUnified, rounded so each slot
	// gets a multiple of 256 (at least 256), which can exceed -c.
	ContextSize int
	// SlotContext is the context each slot gets (llama.cpp's n_ctx_seq).
	SlotContext int
	// TrainContext is the model's training context (n_ctx_train).
	TrainContext int
	// Layers is the model's block count; OffloadLayers how many of them sit
	// on the GPU; FullOffload whether all of them and the output layer do.
	Layers, OffloadLayers int
	FullOffload           bool
	// Architecture is general.architecture ("llama", "qwen3", …).
	Architecture string
}

// EstimateGGUF estimates what llama-server needs to run the model at path
// with options o, using gguf-parser-go's llama.cpp estimate (metadata only;
// the tensor data is not read).
//
// Returns an error matching ErrNotGGUFModel, worded
// "PATH is not a GGUF model file: REASON", when the file is not a model
// llama.cpp could load; an error wrapping *fs.PathError when it (or a shard
// of a split model) cannot be read; and an error naming the option for an
// unknown cache type.
func EstimateGGUF(path string, o EstimateOptions) (est Estimate, err error) {
	defer parserPanic(path, &err)
	ctk, err := cacheType(o.CacheTypeK)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: cache type K: %w", path, err)
	}
	ctv, err := cacheType(o.CacheTypeV)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: cache type V: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate: %w", err)
	}
	switch {
	case fi.IsDir():
		return Estimate{}, notModel(path, errors.New("is a directory"))
	case fi.Size() == 0:
		return Estimate{}, notModel(path, errors.New("empty file"))
	}

	gf, err := parseGGUF(path)
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr):
		// Unreadable (permissions, a missing shard of a split model).
		return Estimate{}, fmt.Errorf("estimate %s: %w", path, err)
	case err != nil:
		return Estimate{}, notModel(path, err)
	}
	a := gf.Architecture()
	if err := checkModel(gf, a); err != nil {
		return Estimate{}, notModel(path, err)
	}

	nCtx, nSeqCtx := llamaContext(o.ContextSize, o.Parallel, o.KVUnified, a.MaximumContextLength)
	parallel := max(o.Parallel, 1)
	opts := []gguf.GGUFRunEstimateOption{
		gguf.WithLLaMACppContextSize(int32(min(nCtx, 1<<31-1))),
		gguf.WithParallelSize(int32(min(parallel, 1<<31-1))),
		gguf.WithLLaMACppCacheKeyType(ctk),
		gguf.WithLLaMACppCacheValueType(ctv),
	}
	if o.GPULayers >= 0 {
		// llama.cpp's -ngl counts the output layer; so does the parser.
		opts = append(opts, gguf.WithLLaMACppOffloadLayers(uint64(o.GPULayers)))
	}
	if o.FlashAttention {
		opts = append(opts, gguf.WithFlashAttention())
	}
	run, err := estimateRun(gf, opts)
	if err != nil {
		return Estimate{}, fmt.Errorf("estimate %s: %w", path, err)
	}
	sum := run.SummarizeItem(false, 0, 0)
	if len(run.Devices) < 2 || len(sum.VRAMs) < 1 {
		return Estimate{}, fmt.Errorf("estimate %s: parser returned no GPU device", path)
	}
	gpu := run.Devices[1]
	margin := max(o.MarginMB, 0)
	e := Estimate{
		VRAMMB:       ceilMiB(uint64(sum.VRAMs[0].NonUMA)) + margin,
		WeightsMB:    ceilMiB(uint64(gpu.Weight.Sum())),
		KVCacheMB:    ceilMiB(uint64(gpu.KVCache.Sum())),
		ComputeMB:    ceilMiB(uint64(gpu.Computation.Sum())),
		MarginMB:     margin,
		RAMMB:        ceilMiB(uint64(sum.RAM.NonUMA)),
		ContextSize:  int(run.ContextSize),
		SlotContext:  nSeqCtx,
		TrainContext: int(a.MaximumContextLength),
		Layers:       int(a.BlockCount),
		// Blocks only; FullOffload says whether the output layer is there too.
		OffloadLayers: int(run.OffloadLayers),
		FullOffload:   run.FullOffloaded,
		Architecture:  a.Architecture,
	}
	return e, nil
}

// llamaContext returns the KV cells llama.cpp allocates in total and per slot
// for -c ctx --parallel n, as llama_context's constructor computes them
// (src/llama-context.cpp): n_ctx = pad(ctx or n_ctx_train, 256); with a
// unified cache every slot sees all of it, otherwise each slot gets
// n_ctx_seq = pad(n_ctx / n, 256) cells and n_ctx becomes n_ctx_seq * n.
// llama-server later caps a slot's usable context at n_ctx_train, but the
// cache is allocated before that, so the cap does not shrink memory.
func llamaContext(ctx, parallel int, unified bool, train uint64) (total, perSlot int) {
	const pad = 256
	n := uint64(max(ctx, 0))
	if n == 0 {
		n = train
	}
	n = min(n, 1<<31) // a file may claim any context_length; past this the sums overflow
	n = (n + pad - 1) / pad * pad
	seqs := uint64(max(parallel, 1))
	if unified {
		return int(n), int(n)
	}
	perSeq := (n/seqs + pad - 1) / pad * pad
	perSeq = max(perSeq, pad) // n_ctx_seq == 0 is an error in llama.cpp; padding makes it 256
	return int(perSeq * seqs), int(perSeq)
}

// checkModel rejects GGUF files llama-server cannot run as a model.
func checkModel(gf *gguf.GGUFFile, a gguf.GGUFArchitecture) error {
	// Architecture() defaults to "llama" when the key is missing, so look
	// for the key itself.
	if _, ok := gf.Header.MetadataKV.Get("general.architecture"); !ok {
		return errors.New("no general.architecture in the metadata")
	}
	if len(gf.TensorInfos) == 0 {
		return errors.New("no tensors (a vocab-only file?)")
	}
	switch {
	case a.Type != "model":
		return fmt.Errorf("a %s file (%s), not a model", a.Type, a.Architecture)
	case a.Architecture == "diffusion":
		return errors.New("a diffusion model, not a llama.cpp model")
	case a.BlockCount == 0 || a.EmbeddingLength == 0:
		return fmt.Errorf("no %s.block_count or %s.embedding_length in the metadata", a.Architecture, a.Architecture)
	}
	for _, ti := range gf.TensorInfos {
		if strings.HasPrefix(ti.Name, "blk.") {
			return nil
		}
	}
	return errors.New("no layer tensors (blk.*)")
}

// parseGGUF parses the file's header. The parser reads untrusted bytes; a
// panic in it becomes an error.
// parserPanic turns a panic of the GGUF parser that escaped parseGGUF (its
// accessors type-check metadata values and panic on a mismatch: a
// pooling_type stored as int32, an empty head_count array) into an error
// saying the file is not a model VramCram can read, so that an odd file
// never takes the daemon down. Deferred by every exported reader.
func parserPanic(path string, err *error) {
	if r := recover(); r != nil {
		*err = notModel(path, fmt.Errorf("parser panic: %v", r))
	}
}

func parseGGUF(path string) (gf *gguf.GGUFFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			gf, err = nil, fmt.Errorf("parser panic: %v", r)
		}
	}()
	return gguf.ParseGGUFFile(path, gguf.SkipLargeMetadata())
}

// estimateRun runs the parser's estimate, turning a panic (it panics on
// option combinations it considers impossible) into an error.
func estimateRun(gf *gguf.GGUFFile, opts []gguf.GGUFRunEstimateOption) (e gguf.LLaMACppRunEstimate, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser panic: %v", r)
		}
	}()
	return gf.EstimateLLaMACppRun(opts...), nil
}

// cacheTypes are the KV cache types llama.cpp accepts for -ctk/-ctv.
var cacheTypes = map[string]gguf.GGMLType{
	"f32":    gguf.GGMLTypeF32,
	"f16":    gguf.GGMLTypeF16,
	"bf16":   gguf.GGMLTypeBF16,
	"q8_0":   gguf.GGMLTypeQ8_0,
	"q4_0":   gguf.GGMLTypeQ4_0,
	"q4_1":   gguf.GGMLTypeQ4_1,
	"iq4_nl": gguf.GGMLTypeIQ4_NL,
	"q5_0":   gguf.GGMLTypeQ5_0,
	"q5_1":   gguf.GGMLTypeQ5_1,
}

func cacheType(s string) (gguf.GGMLType, error) {
	if s == "" {
		return gguf.GGMLTypeF16, nil
	}
	t, ok := cacheTypes[strings.ToLower(s)]
	if !ok {
		return 0, fmt.Errorf("unknown type %q (want f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0 or q5_1)", s)
	}
	return t, nil
}

// notModelError is the error for a file that is not a GGUF model.
type notModelError struct {
	path   string
	reason error
}

func notModel(path string, reason error) error { return &notModelError{path: path, reason: reason} }

func (e *notModelError) Error() string {
	return e.path + " is not a GGUF model file: " + e.reason.Error()
}

func (e *notModelError) Unwrap() []error { return []error{ErrNotGGUFModel, e.reason} }
