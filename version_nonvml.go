//go:build nonvml

package main

// nvmlBuiltIn tells whether the vram package was built with go-nvml (cgo).
const nvmlBuiltIn = false
