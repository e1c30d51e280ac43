package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"

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
		llm, ok := cfg.LLMByName(m.Name)
		if !ok {
			continue
		}
		fa := !slices.Contains(llm.Config.ExtraArgs, "off") // -fa auto turns flash attention on for CUDA
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
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds),
		})
	}
	for _, m := range cfg.Models.Diffusion {
		sc.Models = append(sc.Models, scheduler.Model{
			Name: m.Name, Type: "diffusion", VRAMMB: m.VRAMMB, Slots: 1,
			Pinned: m.Pinned, Preload: m.Preload, TTL: seconds(m.TTLSeconds),
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
	return &launchers{
		llm: &scheduler.LlamaLauncher{
			Binary:  cfg.Inference.LlamaServerPath,
			Options: opts,
			Records: records,
			Runner: runner.Config{
				ReadyTimeout:      seconds(a.WorkerReadyTimeoutSeconds),
				HeartbeatInterval: seconds(a.HeartbeatIntervalSeconds),
				HeartbeatTimeout:  seconds(a.HeartbeatTimeoutSeconds),
				StopGrace:         seconds(a.StopGraceSeconds),
				Logger:            log.With("component", "engine"),
			},
		},
		diffusion: unsupported{},
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

// errNoDiffusion is reported for diffusion models until their engines land.
var errNoDiffusion = errors.New("diffusion engines (sd-cli, sd-server) are not supported by this build yet")

// unsupported is the launcher of engine kinds this build does not run. Such
// models show as unavailable with the reason, and jobs for them are refused.
type unsupported struct{}

func (unsupported) Check(scheduler.Model) error { return errNoDiffusion }

func (unsupported) Launch(context.Context, scheduler.Model) (scheduler.Engine, error) {
	return nil, errNoDiffusion
}
