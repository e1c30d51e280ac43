// Package vram reads GPU memory: how much the device has, how much is free and
// how much each process holds. The scheduler owns the latest Reading and builds
// its VRAM ledger from it.
//
// Two meters implement Meter. NVML reads the real device through the driver
// library, which is loaded at run time: a binary built with NVML starts on a
// machine without the driver, and OpenMeter then falls back to Static, which
// reports the configured vram.total_mb and nothing else. Building with the
// nonvml tag (CGO_ENABLED=0 works then) leaves NVML out; OpenNVML fails.
//
// WaitReleased waits for an exited engine's memory to show as free again, so a
// load never races a dying process. EstimateGGUF estimates what llama-server
// will hold for a GGUF model with given -c, --parallel and -ngl, from the file's
// metadata (gguf-parser-go), before anything is loaded.
//
// All figures are MiB (1 MiB = 1<<20 bytes), the unit of the config file.
// go-nvml is this project's only cgo; it stays inside this package.
package vram
