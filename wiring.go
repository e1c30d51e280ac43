package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/vramcram/vramcram/api"
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
func estimateModels(cfg *Config, models []scheduler.Model, log *slog.Logger) {
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
func schedulerConfig(cfg *Config) scheduler.Config {
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
			Name: m.Name, Type: "llm", VRAMMB: m.VRAMMB, Slots: m.Config.Parallel,
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds), GPUs: m.GPUs,
		})
	}
	for _, m := range cfg.Models.Diffusion {
		sc.Models = append(sc.Models, scheduler.Model{
			Name: m.Name, Type: "diffusion", VRAMMB: m.VRAMMB, Slots: 1,
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds), GPUs: m.GPUs,
		})
	}
	return sc
}

func apiConfig(cfg *Config, log *slog.Logger) api.Config {
	types := map[string]string{}
	embeddings := map[string]bool{}
	for _, m := range cfg.Models.LLM {
		types[m.Name] = "llm"
		embeddings[m.Name] = m.Config.Embeddings
	}
	for _, m := range cfg.Models.Diffusion {
		types[m.Name] = "diffusion"
	}
	return api.Config{
		APIKeys: cfg.Server.APIKeys, MaxBodyBytes: cfg.Server.MaxBodyBytes, MaxPromptChars: cfg.Server.MaxPromptChars,
		MaxAttempts: cfg.Scheduling.MaxAttempts, ModelTypes: types, Version: version, Logger: log.With("component", "api"),
		InteractivePriority: cfg.Scheduling.InteractivePriority, Embeddings: embeddings,
		ImageDir: imageDir(cfg),
	}
}

// launchers picks the engine launcher by model type.
type launchers struct {
	llm       scheduler.Launcher
	diffusion scheduler.Launcher
}

func newLaunchers(cfg *Config, records *runner.Records, log *slog.Logger) *launchers {
	opts := map[string]runner.LlamaOptions{}
	for _, m := range cfg.Models.LLM {
		extra := m.Config.ExtraArgs
		if m.Config.Embeddings {
			extra = append([]string{"--embeddings"}, extra...)
		}
		opts[m.Name] = runner.LlamaOptions{
			ModelPath: m.ModelPath, ContextSize: m.Config.ContextSize, GPULayers: m.Config.GPULayers,
			Parallel: m.Config.Parallel, Extra: extra,
			Alias: m.Name, // answers name the model as clients know it, not by its file path
		}
	}
	a := cfg.Agents
	rc := runner.Config{
		ReadyTimeout:      seconds(a.WorkerReadyTimeoutSeconds),
		HeartbeatInterval: seconds(a.HeartbeatIntervalSeconds),
		HeartbeatTimeout:  seconds(a.HeartbeatTimeoutSeconds),
		StopGrace:         seconds(a.StopGraceSeconds),
		Logger:            log.With("component", "engine"),
	}
	return &launchers{
		llm: &scheduler.LlamaLauncher{
			Binary:  cfg.Inference.LlamaServerPath,
			Options: opts,
			Records: records,
			Runner:  rc,
		},
		diffusion: diffusionLauncher(cfg, records, rc),
	}
}

// imageDir is where diffusion jobs' images are written: DATA_DIR/images/JOB_ID/.
func imageDir(cfg *Config) string { return filepath.Join(cfg.Storage.DataDir, "images") }

// diffusionLauncher maps the diffusion models' config onto their engines.
func diffusionLauncher(cfg *Config, records *runner.Records, rc runner.Config) *scheduler.DiffusionLauncher {
	opts := map[string]scheduler.DiffusionOptions{}
	for _, m := range cfg.Models.Diffusion {
		c := m.Config
		opts[m.Name] = scheduler.DiffusionOptions{
			Engine: c.Engine,
			Files: runner.SDFiles{
				Model: m.ModelPath, DiffusionModel: c.DiffusionModel, VAE: c.VAE,
				ClipL: c.ClipL, ClipG: c.ClipG, T5XXL: c.T5XXL, LLM: c.LLM,
			},
			Defaults: scheduler.DiffusionDefaults{
				Width: c.Width, Height: c.Height, Steps: c.Steps, CFGScale: c.CFGScale,
				SamplingMethod: c.SamplingMethod, Scheduler: c.Scheduler,
			},
			Extra:   c.ExtraArgs,
			Timeout: seconds(c.TimeoutSeconds),
		}
	}
	return &scheduler.DiffusionLauncher{
		CLIBinary:    cfg.Inference.SDPath,
		ServerBinary: cfg.Inference.SDServerPath,
		Options:      opts,
		ImageDir:     imageDir(cfg),
		Runner:       rc,
		Records:      records,
	}
}

func (l *launchers) pick(m scheduler.Model) scheduler.Launcher {
	if m.Type == "diffusion" {
		return l.diffusion
	}
	return l.llm
}

func (l *launchers) Check(m scheduler.Model) error { return l.pick(m).Check(m) }

func (l *launchers) Launch(ctx context.Context, m scheduler.Model) (scheduler.Engine, error) {
	return l.pick(m).Launch(ctx, m)
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
