package vram

import (
	"context"
	"fmt"
)

// Source names where a Reading came from, as shown in /health.
type Source string

const (
	// SourceConfig means the figures come from vram.total_mb in the config.
	SourceConfig Source = "config"
	// SourceNVML means the figures were read from the driver.
	SourceNVML Source = "nvml"
)

// Reading is one sample of a device's memory.
type Reading struct {
	Source  Source
	TotalMB int
	// FreeMB is what the driver reports free; for SourceConfig it equals TotalMB.
	FreeMB int
	// ByPID is memory held per process, when the source can tell.
	ByPID map[int]int
	// Group maps a listed PID to its process group, where known. Engines
	// run as group leaders, so memory held by an engine's helper processes
	// counts as the engine's.
	Group map[int]int
}

// Held returns the memory process pid and the members of its process group
// hold, and whether the reading lists any of them. A listed process may hold
// 0 when the driver cannot attribute its memory. A static reading lists
// nobody.
func (r Reading) Held(pid int) (mb int, listed bool) {
	for p, n := range r.ByPID {
		if p == pid || r.Group[p] == pid {
			mb += n
			listed = true
		}
	}
	return mb, listed
}

// UsedMB returns TotalMB − FreeMB.
func (r Reading) UsedMB() int { return r.TotalMB - r.FreeMB }

// NotOursMB returns the memory held by processes that are not in ours,
// as far as the reading can tell: used memory minus what our processes hold.
// A static reading knows nothing of other processes and returns 0.
func (r Reading) NotOursMB(ours map[int]bool) int {
	if r.Source != SourceNVML {
		return 0
	}
	mine := 0
	for pid, mb := range r.ByPID {
		if ours[pid] || ours[r.Group[pid]] {
			mine += mb
		}
	}
	if n := r.UsedMB() - mine; n > 0 {
		return n
	}
	return 0
}

// Static is a meter that reports a configured total and no usage.
type Static struct {
	TotalMB int
}

// NewStatic returns a Static meter for totalMB. It returns an error when
// totalMB is not positive.
func NewStatic(totalMB int) (*Static, error) {
	if totalMB <= 0 {
		return nil, fmt.Errorf("static meter: total %d MiB must be positive", totalMB)
	}
	return &Static{TotalMB: totalMB}, nil
}

// Read returns the configured total as free memory.
func (s *Static) Read(ctx context.Context) (Reading, error) {
	if err := ctx.Err(); err != nil {
		return Reading{}, err
	}
	return Reading{Source: SourceConfig, TotalMB: s.TotalMB, FreeMB: s.TotalMB}, nil
}

// Close does nothing; it lets Static stand in where a meter must be closed.
func (s *Static) Close() error { return nil }
