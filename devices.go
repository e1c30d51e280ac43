package main

import (
	"fmt"
	"log/slog"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/vram"
)

// openDevices opens a meter per GPU from vram.devices (or every NVML
// device, or one of vram.total_mb).
func openDevices(cfg *config.Config, log *slog.Logger) ([]vram.Device, vram.Source, error) {
	var specs []vram.DeviceSpec
	for _, d := range cfg.VRAM.Devices {
		specs = append(specs, vram.DeviceSpec{Index: d.Index, UUID: d.UUID, TotalMB: d.TotalMB})
	}
	devs, source, err := vram.OpenDevices(specs, cfg.VRAM.TotalMB, log)
	if err != nil {
		return nil, "", fmt.Errorf("open GPUs (vram.devices, vram.total_mb): %w", err)
	}
	return devs, source, nil
}

func closeDevices(devs []vram.Device, log *slog.Logger) {
	for _, d := range devs {
		if err := d.Meter.Close(); err != nil {
			log.Warn("close GPU meter", "id", d.ID(), "err", err)
		}
	}
}

// schedulerDevices maps the GPUs onto the scheduler's devices. A single GPU
// that VramCram only knows from vram.total_mb gets no ID: its engines are
// not confined with CUDA_VISIBLE_DEVICES (they see what VramCram sees).
func schedulerDevices(devs []vram.Device, source vram.Source, configured bool) []scheduler.Device {
	out := make([]scheduler.Device, len(devs))
	for k, d := range devs {
		out[k] = scheduler.Device{ID: d.ID(), Name: d.Name, TotalMB: d.TotalMB, Meter: d.Meter}
	}
	if len(devs) == 1 && source == vram.SourceConfig && !configured {
		out[0].ID = ""
	}
	return out
}
