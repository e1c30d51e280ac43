// Package vram reads GPU memory: how much the device has, how much is free and
// how much each process holds. The scheduler owns the latest Reading and builds
// its VRAM ledger from it.
//
// Two meters exist. Static reports the configured total and nothing else; it is
// used when NVML is unavailable (no driver, no GPU, a cgo-less build) and in
// tests. The NVML meter (a later addition) reads the real device.
//
// All figures are MiB (1 MiB = 1<<20 bytes), the unit of the config file.
package vram
