package config

import "strconv"

// VRAMConfig is the VRAM ledger's budget and the NVML polling period.
type VRAMConfig struct {
	TotalMB                   int `koanf:"total_mb"`                    // default 24576
	SafetyMarginMB            int `koanf:"safety_margin_mb"`            // default 1024
	MonitoringIntervalSeconds int `koanf:"monitoring_interval_seconds"` // default 5
	ReleaseTimeoutSeconds     int `koanf:"release_timeout_seconds"`     // default 10: wait for an evicted engine's memory to show free
	// Devices restricts the GPUs used (NVML: by uuid, else index) or, without
	// NVML, describes them (total_mb each). Empty: every GPU NVML lists, or
	// one of total_mb.
	Devices []DeviceConfig `koanf:"devices"`
}

// DeviceConfig is one entry of vram.devices.
type DeviceConfig struct {
	Index   int    `koanf:"index"`
	UUID    string `koanf:"uuid"`
	TotalMB int    `koanf:"total_mb"` // the size when NVML is absent
}

// validateVRAM checks vram.*.
func validateVRAM(p *problems, v VRAMConfig) {
	if v.TotalMB <= 0 {
		p.addf("vram.total_mb: must be more than 0, got %d", v.TotalMB)
	}
	if v.SafetyMarginMB < 0 {
		p.addf("vram.safety_margin_mb: must be 0 or more, got %d", v.SafetyMarginMB)
	} else if v.TotalMB > 0 && v.SafetyMarginMB >= v.TotalMB {
		p.addf("vram.safety_margin_mb: %d leaves no budget; it must be less than vram.total_mb (%d)", v.SafetyMarginMB, v.TotalMB)
	}
	p.atLeast("vram.monitoring_interval_seconds", v.MonitoringIntervalSeconds, 1)
	p.atLeast("vram.release_timeout_seconds", v.ReleaseTimeoutSeconds, 1)
	seenDev := map[string]bool{}
	for i, d := range v.Devices {
		path := joinIndex("vram.devices", i)
		p.atLeast(path+".index", d.Index, 0)
		p.atLeast(path+".total_mb", d.TotalMB, 0)
		if d.TotalMB > 0 && v.SafetyMarginMB >= d.TotalMB {
			p.addf("%s.total_mb: %d leaves no budget beside vram.safety_margin_mb (%d)", path, d.TotalMB, v.SafetyMarginMB)
		}
		key := d.UUID
		if key == "" {
			key = strconv.Itoa(d.Index)
		}
		if seenDev[key] {
			p.addf("%s: GPU %s is listed twice", path, key)
		}
		seenDev[key] = true
	}
}
