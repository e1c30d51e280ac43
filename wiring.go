package main

import (
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/command"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/vram"
)

// estimateMarginMB is added to GGUF estimates for what the parser does not
// count: the CUDA context and library workspaces of the engine process.
const estimateMarginMB = 512

// estimateModels fills EstimateMB of LLMs from their GGUF files: the
// reservation used when vram_mb is not configured. A file that cannot be
// estimated is logged; the model then reserves the whole budget.
func estimateModels(cfg *config.Config, models []scheduler.Model, log *slog.Logger) {
	for k := range models {
		m := &models[k]
		if d, ok := cfg.DiffusionByName(m.Name); ok {
			estimateDiffusion(d, m, log)
			continue
		}
		llm, ok := cfg.LLMByName(m.Name)
		if !ok {
			continue
		}
		fa := flashAttention(llm.Config.ExtraArgs)
		est, err := vram.EstimateGGUF(llm.ModelPath, vram.EstimateOptions{
			ContextSize: llm.Config.ContextSize, Parallel: llm.Config.Parallel, GPULayers: llm.Config.GPULayers,
			FlashAttention: fa, MarginMB: estimateMarginMB,
		})
		if err != nil {
			if m.VRAMMB == 0 {
				log.Warn("no VRAM figure for model: it will reserve the whole budget", "model", m.Name, "err", err)
			}
			continue
		}
		m.EstimateMB = est.VRAMMB
		log.Info("VRAM estimate from GGUF", "model", m.Name, "vram_estimate_mb", est.VRAMMB, "vram_mb", m.VRAMMB,
			"weights_mb", est.WeightsMB, "kv_cache_mb", est.KVCacheMB, "compute_mb", est.ComputeMB)
	}
}

// schedulerConfig maps the file's keys onto the scheduler's settings.
func schedulerConfig(cfg *config.Config) scheduler.Config {
	sc := scheduler.Config{
		TotalMB:        cfg.VRAM.TotalMB,
		SafetyMarginMB: cfg.VRAM.SafetyMarginMB,
		Policy:         scheduler.Policy(cfg.Scheduling.Policy),
		MaxWait:        seconds(cfg.Scheduling.MaxWaitSeconds),
		Aging:          seconds(cfg.Scheduling.AgingSeconds),
		MaxAttempts:    cfg.Scheduling.MaxAttempts,
		ShutdownGrace:  seconds(cfg.Agents.GracefulShutdownTimeoutSeconds),
		MeterInterval:  seconds(cfg.VRAM.MonitoringIntervalSeconds),
		ReleaseTimeout: seconds(cfg.VRAM.ReleaseTimeoutSeconds),
	}
	for _, m := range cfg.Models.LLM {
		sc.Models = append(sc.Models, scheduler.Model{
			Name: m.Name, Kind: engine.KindLLM, Engine: m.Config.Engine, VRAMMB: m.VRAMMB, Slots: m.Config.Parallel,
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds), GPUs: m.GPUs,
		})
	}
	for _, m := range cfg.Models.Diffusion {
		sc.Models = append(sc.Models, scheduler.Model{
			Name: m.Name, Kind: engine.KindDiffusion, Engine: m.Config.Engine, VRAMMB: m.VRAMMB, Slots: 1,
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds), GPUs: m.GPUs,
		})
	}
	return sc
}

// apiConfig maps the file's keys onto the API's settings; reg answers which
// OpenAI paths each model's engine serves.
func apiConfig(cfg *config.Config, reg *engine.Registry, log *slog.Logger) api.Config {
	types := api.ModelKinds{}
	embeddings := map[string]bool{}
	endpoints := map[string][]string{}
	relayImages := map[string]bool{}
	for _, m := range cfg.Models.LLM {
		types[m.Name] = engine.KindLLM
		endpoints[m.Name] = reg.Routes(m.Config.Engine, m.Name)
		embeddings[m.Name] = slices.Contains(endpoints[m.Name], "/v1/embeddings")
	}
	for _, m := range cfg.Models.Diffusion {
		types[m.Name] = engine.KindDiffusion
		endpoints[m.Name] = reg.Routes(m.Config.Engine, m.Name)
		relayImages[m.Name] = m.Config.Engine == command.Name && slices.Contains(endpoints[m.Name], api.ImagesPath)
	}
	return api.Config{
		APIKeys: cfg.Server.APIKeys, MaxBodyBytes: cfg.Server.MaxBodyBytes, MaxPromptChars: cfg.Server.MaxPromptChars,
		MaxAttempts: cfg.Scheduling.MaxAttempts, ModelTypes: types, Version: version, Logger: log.With("component", "api"),
		InteractivePriority: cfg.Scheduling.InteractivePriority, Embeddings: embeddings,
		ImageDir: imageDir(cfg), Endpoints: endpoints, RelayImages: relayImages, Aliases: config.Aliases(cfg),
		ServesRoute: config.ServesRoute(cfg, endpoints), ModelInfo: modelFileInfo(cfg),
		Logs: daemonLogs,
	}
}

// newRegistry builds every engine's launcher from the config and registers
// it by name: the scheduler starts each model with the engine its
// config.engine names.
func newRegistry(cfg *config.Config, records *runner.Records, log *slog.Logger) (*engine.Registry, error) {
	a := cfg.Agents
	rc := runner.Config{
		ReadyTimeout:      seconds(a.WorkerReadyTimeoutSeconds),
		HeartbeatInterval: seconds(a.HeartbeatIntervalSeconds),
		HeartbeatTimeout:  seconds(a.HeartbeatTimeoutSeconds),
		StopGrace:         seconds(a.StopGraceSeconds),
		Logger:            log.With("component", "engine"),
	}
	sd := diffusionLauncher(cfg, records, rc)
	reg := engine.NewRegistry()
	for _, e := range []struct {
		name string
		l    engine.Launcher
	}{
		{llamacpp.Name, llamaLauncher(cfg, records, rc)},
		{sdcpp.EngineSDCLI, sd},
		{sdcpp.EngineSDServer, sd},
		{command.Name, commandLauncher(cfg, records, rc)},
	} {
		if err := reg.Register(e.name, e.l); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// llamaLauncher maps the llama-server models' config onto their engine.
func llamaLauncher(cfg *config.Config, records *runner.Records, rc runner.Config) *llamacpp.Launcher {
	opts := map[string]llamacpp.Options{}
	for _, m := range cfg.Models.LLM {
		if m.Config.Engine != llamacpp.Name {
			continue
		}
		extra := m.Config.ExtraArgs
		if m.Config.Embeddings {
			pooling, _ := llmPooling(m)
			extra = append([]string{"--embeddings", "--pooling", pooling}, extra...)
		}
		opts[m.Name] = llamacpp.Options{
			Binary:    m.Config.Binary,
			ModelPath: m.ModelPath, ContextSize: m.Config.ContextSize, GPULayers: m.Config.GPULayers,
			Parallel: m.Config.Parallel, Extra: extra,
			Alias: m.Name, // answers name the model as clients know it, not by its file path
		}
	}
	return &llamacpp.Launcher{Binary: cfg.Inference.LlamaServerPath, Options: opts, Records: records, Runner: rc}
}

// commandLauncher maps the command models' config (in either list) onto
// the command engine.
func commandLauncher(cfg *config.Config, records *runner.Records, rc runner.Config) *command.Launcher {
	opts := map[string]command.Options{}
	for _, m := range cfg.Models.LLM {
		if c := m.Config; c.Engine == command.Name {
			opts[m.Name] = command.Options{Kind: engine.KindLLM, Cmd: c.Cmd, Env: c.Env, HealthPath: c.HealthPath,
				Routes: c.Routes, ModelPath: m.ModelPath, ContextSize: c.ContextSize}
		}
	}
	for _, m := range cfg.Models.Diffusion {
		if c := m.Config; c.Engine == command.Name {
			opts[m.Name] = command.Options{Kind: engine.KindDiffusion, Cmd: c.Cmd, Env: c.Env, HealthPath: c.HealthPath,
				Routes: c.Routes, ModelPath: m.ModelPath}
		}
	}
	return &command.Launcher{Options: opts, Records: records, Runner: rc}
}

// imageDir is where diffusion jobs' images are written: DATA_DIR/images/JOB_ID/.
func imageDir(cfg *config.Config) string { return filepath.Join(cfg.Storage.DataDir, "images") }

// diffusionLauncher maps the diffusion models' config onto their engines.
func diffusionLauncher(cfg *config.Config, records *runner.Records, rc runner.Config) *sdcpp.Launcher {
	opts := map[string]sdcpp.Options{}
	for _, m := range cfg.Models.Diffusion {
		c := m.Config
		if c.Engine == command.Name {
			continue
		}
		opts[m.Name] = sdcpp.Options{
			Engine: c.Engine,
			Files: sdcpp.Files{
				Model: m.ModelPath, DiffusionModel: c.DiffusionModel, VAE: c.VAE,
				ClipL: c.ClipL, ClipG: c.ClipG, T5XXL: c.T5XXL, LLM: c.LLM,
			},
			Defaults: sdcpp.Defaults{
				Width: c.Width, Height: c.Height, Steps: c.Steps, CFGScale: c.CFGScale,
				SamplingMethod: c.SamplingMethod, Scheduler: c.Scheduler,
			},
			Extra:   c.ExtraArgs,
			Timeout: seconds(c.TimeoutSeconds),
		}
	}
	return &sdcpp.Launcher{
		CLIBinary:    cfg.Inference.SDPath,
		ServerBinary: cfg.Inference.SDServerPath,
		Options:      opts,
		ImageDir:     imageDir(cfg),
		Runner:       rc,
		Records:      records,
	}
}

// flashAttention reports whether llama-server will use flash attention with
// these extra args: its default (-fa auto) turns it on for CUDA; only
// -fa/--flash-attn off (or 0, false) turns it off.
func flashAttention(extra []string) bool {
	for k, a := range extra {
		name, val, inline := strings.Cut(a, "=")
		if name != "-fa" && name != "--flash-attn" {
			continue
		}
		if !inline && k+1 < len(extra) {
			val = extra[k+1]
		}
		switch strings.ToLower(val) {
		case "off", "0", "false":
			return false
		}
	}
	return true
}
