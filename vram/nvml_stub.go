//go:build nonvml

package vram

import (
	"context"
	"fmt"
	"log/slog"
)

// NVML is the driver meter; this build has none (nonvml tag), so it cannot be
// opened. The type exists so code that names it compiles either way.
type NVML struct{}

// OpenNVML always fails in a build without NVML. lib is ignored; it is typed
// any here because go-nvml needs cgo.
//
// Returns an error wrapping ErrNVMLUnavailable.
func OpenNVML(lib any, index int, log *slog.Logger) (*NVML, error) {
	return nil, fmt.Errorf("%w: built without NVML (nonvml tag)", ErrNVMLUnavailable)
}

// DeviceName returns "".
func (n *NVML) DeviceName() string { return "" }

// Read returns ErrClosed: a stub NVML is never open.
func (n *NVML) Read(ctx context.Context) (Reading, error) { return Reading{}, ErrClosed }

// Close does nothing.
func (n *NVML) Close() error { return nil }

// openDefaultNVML fails: this build has no NVML.
func openDefaultNVML(log *slog.Logger) (meterCloser, error) {
	_, err := OpenNVML(nil, 0, log)
	return nil, err
}

// UUID returns "".
func (n *NVML) UUID() string { return "" }

// openAllNVML fails: this build has no NVML.
func openAllNVML(log *slog.Logger) ([]Device, error) {
	_, err := OpenNVML(nil, 0, log)
	return nil, err
}
