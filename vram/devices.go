package vram

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
)

// DeviceSpec restricts or sizes one GPU (config vram.devices): with NVML it
// picks a device by index or UUID; without NVML it describes one, with
// TotalMB its size.
type DeviceSpec struct {
	Index   int
	UUID    string
	TotalMB int
}

// Device is one GPU and its meter.
type Device struct {
	Index   int    // the driver's index
	UUID    string // "" when unknown (no NVML)
	Name    string
	TotalMB int
	Meter   MeterCloser
}

// ID is what CUDA_VISIBLE_DEVICES should name for this device: its UUID,
// which does not depend on the environment's own CUDA_VISIBLE_DEVICES, else
// its index.
func (d Device) ID() string {
	if d.UUID != "" {
		return d.UUID
	}
	return strconv.Itoa(d.Index)
}

// OpenDevices returns a meter per GPU and their source. With NVML: every
// device the driver lists, or those specs name (by UUID, else index), in
// spec order. Without NVML: a static meter per spec (TotalMB each), or one
// device of totalMB when there are no specs. The caller closes each Meter.
func OpenDevices(specs []DeviceSpec, totalMB int, log *slog.Logger) ([]Device, Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return openDevices(specs, totalMB, log, openAllNVML)
}

func openDevices(specs []DeviceSpec, totalMB int, log *slog.Logger, openAll func(*slog.Logger) ([]Device, error)) ([]Device, Source, error) {
	all, err := openAll(log)
	if err == nil {
		devs, err := pickDevices(all, specs)
		if err != nil {
			return nil, "", err
		}
		return devs, SourceNVML, nil
	}
	var devs []Device
	if len(specs) == 0 {
		s, serr := NewStatic(totalMB)
		if serr != nil {
			return nil, "", fmt.Errorf("open meter: %w; and vram.total_mb: %w", err, serr)
		}
		devs = []Device{{Index: 0, TotalMB: totalMB, Meter: s}}
	}
	for k, sp := range specs {
		s, serr := NewStatic(sp.TotalMB)
		if serr != nil {
			return nil, "", fmt.Errorf("open meter: %w; and vram.devices[%d].total_mb: %w", err, k, serr)
		}
		devs = append(devs, Device{Index: sp.Index, UUID: sp.UUID, TotalMB: sp.TotalMB, Meter: s})
	}
	log.Warn("NVML unavailable, using the configured sizes", "devices", len(devs), "err", err)
	return devs, SourceConfig, nil
}

// pickDevices keeps the devices specs name, in their order, and closes the
// rest. No specs keeps them all.
func pickDevices(all []Device, specs []DeviceSpec) ([]Device, error) {
	if len(specs) == 0 {
		return all, nil
	}
	keep := make([]Device, 0, len(specs))
	used := map[int]bool{}
	var errs []error
	for k, sp := range specs {
		found := -1
		for j, d := range all {
			if (sp.UUID != "" && d.UUID == sp.UUID) || (sp.UUID == "" && d.Index == sp.Index) {
				found = j
			}
		}
		switch {
		case found < 0:
			errs = append(errs, fmt.Errorf("vram.devices[%d]: no GPU with index %d / UUID %q among %d", k, sp.Index, sp.UUID, len(all)))
		case used[found]:
			errs = append(errs, fmt.Errorf("vram.devices[%d]: GPU %s named twice", k, all[found].ID()))
		default:
			used[found] = true
			keep = append(keep, all[found])
		}
	}
	for j, d := range all {
		if !used[j] || len(errs) > 0 {
			_ = d.Meter.Close()
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return keep, nil
}
