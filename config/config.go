// Package config is VramCram's configuration: one file per section of the
// YAML (server, storage, vram, inference and agents, scheduling, logging,
// models), each with its struct, defaults and validation; load.go and
// decode.go turn the file and the VRAMCRAM_* environment into a Config,
// naming the key path of every problem.
package config

// Config is the whole daemon configuration. Load builds it; the field
// comments give the defaults (see Default) and config.example.yaml
// documents every key.
type Config struct {
	Server     ServerConfig     `koanf:"server"`
	Storage    StorageConfig    `koanf:"storage"`
	VRAM       VRAMConfig       `koanf:"vram"`
	Inference  InferenceConfig  `koanf:"inference"`
	Agents     AgentsConfig     `koanf:"agents"`
	Scheduling SchedulingConfig `koanf:"scheduling"`
	Logging    LoggingConfig    `koanf:"logging"`
	Models     ModelsConfig     `koanf:"models"`
}

// Validate returns every problem with the values of c, each prefixed with its
// key path; nil when c is valid. It does not look at the file system: a
// missing model file or engine binary makes that model unavailable at run
// time, it is not a configuration error.
func (c *Config) Validate() []string {
	var p problems
	validateServer(&p, c.Server)
	validateStorage(&p, c.Storage)
	validateVRAM(&p, c.VRAM)
	validateProcesses(&p, c.Inference, c.Agents)
	validateScheduling(&p, c.Scheduling)
	validateLogging(&p, c.Logging)
	validateModels(&p, c)
	validateDurations(&p, c)
	return p
}

// Budget returns the VRAM, in MB, that models may reserve when NVML is not
// available: vram.total_mb minus vram.safety_margin_mb.
func (c *Config) Budget() int {
	return c.VRAM.TotalMB - c.VRAM.SafetyMarginMB
}

// LLMByName returns the LLM model called name.
func (c *Config) LLMByName(name string) (LLMModel, bool) {
	for _, m := range c.Models.LLM {
		if m.Name == name {
			return m, true
		}
	}
	return LLMModel{}, false
}

// DiffusionByName returns the diffusion model called name.
func (c *Config) DiffusionByName(name string) (DiffusionModel, bool) {
	for _, m := range c.Models.Diffusion {
		if m.Name == name {
			return m, true
		}
	}
	return DiffusionModel{}, false
}

// ModelNames returns the names of all configured models, LLMs first, in
// config order.
func (c *Config) ModelNames() []string {
	names := make([]string, 0, len(c.Models.LLM)+len(c.Models.Diffusion))
	for _, m := range c.Models.LLM {
		names = append(names, m.Name)
	}
	for _, m := range c.Models.Diffusion {
		names = append(names, m.Name)
	}
	return names
}
