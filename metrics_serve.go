package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
)

// metricsConfig maps the config onto the metrics' settings.
func metricsConfig(cfg *config.Config, log *slog.Logger) api.MetricsConfig {
	var names []string
	for _, m := range cfg.Models.LLM {
		names = append(names, m.Name)
	}
	for _, m := range cfg.Models.Diffusion {
		names = append(names, m.Name)
	}
	return api.MetricsConfig{Models: names, Version: version, Logger: log.With("component", "metrics")}
}

// serveMetrics serves /metrics on server.host:server.metrics_port, a
// listener of its own (no API key: scrapers rarely have one, and no prompt or
// result is exposed). Port 0 disables it. The returned stop closes the
// listener; it is safe to call when nothing was started.
func serveMetrics(cfg *config.Config, m *api.Metrics, log *slog.Logger) (stop func(), err error) {
	if cfg.Server.MetricsPort == 0 {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "VramCram metrics: GET /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	addr := net.JoinHostPort(cfg.Server.Host, strconv.Itoa(cfg.Server.MetricsPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (server.metrics_port): %w", addr, err)
	}
	log.Info("metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "err", err)
		}
	}()
	return func() { _ = srv.Close() }, nil
}
