package config

import (
	"regexp"

	"github.com/vramcram/vramcram/engine/command"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/engine/sdcpp"
)

// ModelsConfig lists the models that may be served. Names are unique across
// both lists.
type ModelsConfig struct {
	LLM       []LLMModel       `koanf:"llm"`
	Diffusion []DiffusionModel `koanf:"diffusion"`
}

// LLMModel is one model served by llama-server.
type LLMModel struct {
	Name       string          `koanf:"name"`
	Aliases    []string        `koanf:"aliases"` // other names clients may use; unique across names and aliases
	ModelPath  string          `koanf:"model_path"`
	VRAMMB     int             `koanf:"vram_mb"` // 0: unknown, estimate it
	Pinned     bool            `koanf:"pinned"`
	Preload    bool            `koanf:"preload"`
	TTLSeconds int             `koanf:"ttl_seconds"` // 0: no idle unload
	GPUs       []int           `koanf:"gpus"`        // devices to use; several split the model; empty: VramCram picks one
	Config     LLMEngineConfig `koanf:"config"`
}

// LLMEngineConfig is passed to llama-server as flags, or picks the command
// engine.
type LLMEngineConfig struct {
	ContextSize int               `koanf:"context_size"` // default 4096
	GPULayers   int               `koanf:"gpu_layers"`   // default 99
	Parallel    int               `koanf:"parallel"`     // default 1
	Embeddings  bool              `koanf:"embeddings"`
	ExtraArgs   []string          `koanf:"extra_args"`
	Engine      string            `koanf:"engine"`      // llama-server (default) | command
	Binary      string            `koanf:"binary"`      // llama-server: overrides inference.llama_server_path
	Cmd         []string          `koanf:"cmd"`         // command: argv template with ${PORT} ${HOST} ${MODEL_PATH} ${MODEL_NAME} ${GPUS} ${CONTEXT_SIZE}
	Env         map[string]string `koanf:"env"`         // command: added to the engine's environment (values take the macros too)
	HealthPath  string            `koanf:"health_path"` // command: ready when it answers 200; default /health
	Routes      []string          `koanf:"routes"`      // command: OpenAI paths it serves
	// Pooling is llama-server's --pooling, passed with --embeddings: none,
	// mean, cls, last or rank. Default: the GGUF's own pooling type, else
	// mean (a GGUF without one would refuse OpenAI embeddings).
	Pooling string `koanf:"pooling"`
}

// DiffusionModel is one model served by sd-cli or sd-server.
type DiffusionModel struct {
	Name       string                `koanf:"name"`
	Aliases    []string              `koanf:"aliases"` // other names clients may use; unique across names and aliases
	ModelPath  string                `koanf:"model_path"`
	VRAMMB     int                   `koanf:"vram_mb"` // 0: unknown, estimate it
	Pinned     bool                  `koanf:"pinned"`
	Preload    bool                  `koanf:"preload"`
	TTLSeconds int                   `koanf:"ttl_seconds"` // 0: no idle unload
	GPUs       []int                 `koanf:"gpus"`        // devices to use; empty: VramCram picks one
	Config     DiffusionEngineConfig `koanf:"config"`
}

// DiffusionEngineConfig picks the engine and the per-job defaults.
type DiffusionEngineConfig struct {
	Engine         string            `koanf:"engine"`          // sd-cli (default) | sd-server | command
	Width          int               `koanf:"width"`           // 512
	Height         int               `koanf:"height"`          // 512
	Steps          int               `koanf:"steps"`           // 20
	CFGScale       float64           `koanf:"cfg_scale"`       // 7.0
	SamplingMethod string            `koanf:"sampling_method"` // optional
	ExtraArgs      []string          `koanf:"extra_args"`
	Scheduler      string            `koanf:"scheduler"`       // optional: --scheduler
	DiffusionModel string            `koanf:"diffusion_model"` // optional: --diffusion-model (then model_path may be empty)
	VAE            string            `koanf:"vae"`             // optional: --vae
	ClipL          string            `koanf:"clip_l"`          // optional: --clip_l
	ClipG          string            `koanf:"clip_g"`          // optional: --clip_g
	T5XXL          string            `koanf:"t5xxl"`           // optional: --t5xxl
	LLM            string            `koanf:"llm"`             // optional: --llm (LLM text encoder)
	TimeoutSeconds int               `koanf:"timeout_seconds"` // 600: a job's limit; 0 = none
	Cmd            []string          `koanf:"cmd"`             // command: argv template with ${PORT} ${HOST} ${MODEL_PATH} ${MODEL_NAME} ${GPUS} ${CONTEXT_SIZE}
	Env            map[string]string `koanf:"env"`             // command: added to the engine's environment (values take the macros too)
	HealthPath     string            `koanf:"health_path"`     // command: ready when it answers 200; default /health
	Routes         []string          `koanf:"routes"`          // command: OpenAI paths it serves
}

// setDefaults fills the per-model defaults before a list element is decoded.
func (m *LLMModel) setDefaults() {
	m.Config = LLMEngineConfig{ContextSize: 4096, GPULayers: 99, Parallel: 1, Engine: llamacpp.Name}
}

// setDefaults fills the per-model defaults before a list element is decoded.
func (m *DiffusionModel) setDefaults() {
	m.Config = DiffusionEngineConfig{Engine: "sd-cli", Width: 512, Height: 512, Steps: 20, CFGScale: 7, TimeoutSeconds: 600}
}

// modelName is what a model's name must look like: it appears in URLs, job
// records and log lines.
var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validateModels checks models.*: names unique across both lists and the
// aliases, each model's keys for its engine.
func validateModels(p *problems, c *Config) {
	devices := c.VRAM.Devices
	seen := make(map[string]string) // model name → key path of its first use
	name := func(path, n string) {
		switch {
		case n == "":
			p.addf("%s.name: required", path)
		case !modelName.MatchString(n):
			p.addf("%s.name: %q is not a valid name (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)", path, n)
		case seen[n] != "":
			p.addf("%s.name: %q is already used by %s", path, n, seen[n])
		default:
			seen[n] = path
		}
	}
	common := func(path, modelPath string, vramMB, ttl int, gpus []int) {
		if modelPath == "" {
			p.addf("%s.model_path: required", path)
		}
		seen := map[int]bool{}
		for k, g := range gpus {
			switch {
			case g < 0:
				p.addf("%s.gpus[%d]: must be 0 or more, got %d", path, k, g)
			case len(devices) > 0 && g >= len(devices):
				p.addf("%s.gpus[%d]: %d is not one of the %d entries of vram.devices", path, k, g, len(devices))
			case seen[g]:
				p.addf("%s.gpus[%d]: GPU %d is listed twice", path, k, g)
			}
			seen[g] = true
		}
		p.atLeast(path+".vram_mb", vramMB, 0)
		p.atLeast(path+".ttl_seconds", ttl, 0)
	}
	for i, m := range c.Models.LLM {
		path := joinIndex("models.llm", i)
		name(path, m.Name)
		e := m.Config
		isCmd := e.Engine == command.Name
		modelPath := m.ModelPath
		if isCmd && modelPath == "" {
			modelPath = "-" // a command engine may name its model otherwise (vLLM)
		}
		common(path, modelPath, m.VRAMMB, m.TTLSeconds, m.GPUs)
		p.atLeast(path+".config.context_size", e.ContextSize, 1)
		p.atLeast(path+".config.gpu_layers", e.GPULayers, -1)
		p.between(path+".config.parallel", e.Parallel, 1, 64)
		p.oneOf(path+".config.engine", e.Engine, llamacpp.Name, command.Name)
		if isCmd && e.Binary != "" {
			p.addf("%s.config.binary: only for engine %s; a command model names its program in config.cmd[0]", path, llamacpp.Name)
		}
		p.commandKeys(path, isCmd, e.Cmd, e.Env, e.HealthPath, e.Routes)
		if e.Pooling != "" {
			p.oneOf(path+".config.pooling", e.Pooling, "none", "mean", "cls", "last", "rank")
			if !e.Embeddings || isCmd {
				p.addf("%s.config.pooling: only with embeddings: true (engine %s)", path, llamacpp.Name)
			}
		}
	}
	for i, m := range c.Models.Diffusion {
		path := joinIndex("models.diffusion", i)
		name(path, m.Name)
		modelPath := m.ModelPath + m.Config.DiffusionModel // a split model needs no full checkpoint
		isCmd := m.Config.Engine == command.Name
		if isCmd && modelPath == "" {
			modelPath = "-" // a command engine may name its model otherwise
		}
		if modelPath == "" {
			p.addf("%s.model_path: required (or config.diffusion_model for a model in parts)", path)
			modelPath = "-" // reported just now
		}
		common(path, modelPath, m.VRAMMB, m.TTLSeconds, m.GPUs)
		e := m.Config
		p.oneOf(path+".config.engine", e.Engine, "sd-cli", "sd-server", command.Name)
		p.commandKeys(path, isCmd, e.Cmd, e.Env, e.HealthPath, e.Routes)
		p.imageSide(path+".config.width", e.Width)
		p.imageSide(path+".config.height", e.Height)
		p.between(path+".config.steps", e.Steps, 1, 150)
		if e.Engine == "sd-server" && e.Steps > sdcpp.ServerMaxSteps {
			p.addf("%s.config.steps: %d is more than sd-server runs (%d; it clamps without a word)", path, e.Steps, sdcpp.ServerMaxSteps)
		}
		if !(e.CFGScale >= 0 && e.CFGScale <= 30) { // written so that NaN fails
			p.addf("%s.config.cfg_scale: must be between 0 and 30, got %v", path, e.CFGScale)
		}
		p.samplerName(path+".config.sampling_method", e.SamplingMethod, sdcpp.KnownSampleMethod, sdcpp.SampleMethods)
		p.samplerName(path+".config.scheduler", e.Scheduler, sdcpp.KnownScheduler, sdcpp.Schedulers)
		p.atLeast(path+".config.timeout_seconds", e.TimeoutSeconds, 0)
	}
	validateAliases(p, c, seen)
}
