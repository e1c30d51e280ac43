package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/api/batch"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// startBatches builds the OpenAI batch manager from the config and runs it,
// counted in wg, until ctx ends. Its files live in DATA_DIR/files.
func startBatches(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, st *store.Store, sched *scheduler.Scheduler, ac *api.Config, log *slog.Logger) *batch.Manager {
	kinds := map[string]string{}
	for name, k := range ac.ModelTypes {
		kinds[name] = string(k)
	}
	m := batch.New(batch.Config{
		Dir:          filepath.Join(cfg.Storage.DataDir, "files"),
		MaxFileBytes: int64(cfg.Storage.MaxFileMB) * 1_000_000,
		MaxLineBytes: int(cfg.Server.MaxBodyBytes),
		Priority:     cfg.Scheduling.BatchPriority,
		MaxAttempts:  cfg.Scheduling.MaxAttempts,
		Endpoints:    ac.Endpoints,
		Aliases:      ac.Aliases,
		Kinds:        kinds,
		Logger:       log.With("component", "batch"),
	}, st, sched)
	if ac.Metrics != nil {
		ac.Metrics.RegisterBatches(m)
	}
	wg.Go(func() { m.Run(ctx) })
	return m
}
