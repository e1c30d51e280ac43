package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/scheduler"
)

// reloadOpts are serve's flags for reloading its config.
type reloadOpts struct {
	path  string // the config file; "" (defaults and env only): nothing to reload
	watch bool   // -watch-config: reload when the file changes
	fs    *flag.FlagSet
}

// watchInterval is how often -watch-config looks at the file.
const watchInterval = 500 * time.Millisecond

// swapLauncher is the scheduler's Launcher: the current engine registry,
// swapped whole on a reload so that the next launch uses the new options.
// Running engines keep theirs.
type swapLauncher struct {
	reg atomic.Pointer[engine.Registry]
}

func newSwapLauncher(r *engine.Registry) *swapLauncher {
	l := &swapLauncher{}
	l.reg.Store(r)
	return l
}

func (l *swapLauncher) Check(s engine.Spec) error { return l.reg.Load().Check(s) }

func (l *swapLauncher) Launch(ctx context.Context, s engine.Spec) (engine.Engine, error) {
	return l.reg.Load().Launch(ctx, s)
}

// swapHandler serves the current API server; a reload builds a new one for
// the new config and swaps it in, so each request sees one config. Streams
// already open on an older server go on until closeAll.
type swapHandler struct {
	cur atomic.Pointer[api.Server]
	mu  sync.Mutex
	all []*api.Server
}

func (h *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cur.Load().Handler().ServeHTTP(w, r)
}

func (h *swapHandler) set(s *api.Server) {
	h.mu.Lock()
	h.all = append(h.all, s)
	h.mu.Unlock()
	h.cur.Store(s)
}

// closeAll ends the long-lived responses of every server built.
func (h *swapHandler) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.all {
		s.Close()
	}
}

// reloader applies a changed config file to the running daemon. One reload
// runs at a time (SIGHUP, POST /admin/reload and -watch-config share it).
// batchesOffReason is why a node of a fleet serves no Files and Batch API.
const batchesOffReason = "the OpenAI Files and Batch API needs storage.backend bbolt: " +
	"/v1/files and /v1/batches are off on a node sharing a Redis queue; send batches to a node with its own bbolt store"

type reloader struct {
	opts    reloadOpts
	log     *slog.Logger
	sched   *scheduler.Scheduler
	st      jobQueue
	records *runner.Records
	launch  *swapLauncher
	handler *swapHandler
	met     *api.Metrics
	started time.Time
	batches api.Batches // built once at start (nil with storage.backend redis)
	fleet   *fleetNode  // nil on one machine

	mu   sync.Mutex
	boot *config.Config // what the daemon started with: keys that need a restart compare to it
	cur  *config.Config
	sum  [32]byte // of the file last loaded (applied or rejected)

	cfgErr atomic.Pointer[string] // the last rejected reload's error, until one is applied
}

// reloadReport is the answer of POST /admin/reload.
type reloadReport struct {
	Status string `json:"status"` // applied | unchanged | rejected
	configDiff
	Restarted []string `json:"restarted,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// newAPI builds the API server for cfg, with the admin hooks.
func (r *reloader) newAPI(cfg *config.Config, reg *engine.Registry) *api.Server {
	ac := apiConfig(cfg, reg, r.log)
	ac.Metrics = r.met
	ac.Batches = r.batches
	if r.batches == nil {
		ac.BatchesOff = batchesOffReason
	}
	guardAPIConfig(&ac, cfg)
	if r.fleet != nil {
		ac.Node, ac.FleetFunc, ac.RemoteFor = r.fleet.name, r.fleet.fleetView, r.fleet.remoteFor
	}
	ac.Started = r.started
	ac.Reload = func(ctx context.Context) (any, error) { return r.reload(ctx, "POST /admin/reload") }
	ac.ConfigError = r.configError
	ac.RunningConfig = r.runningConfig
	return api.New(ac, r.sched, r.st)
}

func (r *reloader) configError() string {
	if p := r.cfgErr.Load(); p != nil {
		return *p
	}
	return ""
}

// runningConfig is GET /admin/config: the config in force, API keys as
// hashes (vramcram check -url compares its own the same way).
func (r *reloader) runningConfig() any {
	r.mu.Lock()
	c := *r.cur
	r.mu.Unlock()
	c.Server.APIKeys = hashKeys(c.Server.APIKeys)
	c.Storage.Redis.URL = redactURL(c.Storage.Redis.URL)
	return map[string]any{"path": r.opts.path, "config": c}
}

// hashKeys replaces each key by a short hash of it.
func hashKeys(keys []string) []string {
	out := make([]string, len(keys))
	for k, key := range keys {
		sum := sha256.Sum256([]byte(key))
		out[k] = "sha256:" + hex.EncodeToString(sum[:8])
	}
	return out
}

// reload loads the file and applies it. An invalid config is rejected: the
// old one stays in force, the error goes to the log, /health
// (config_error) and the bus (config_rejected), and is returned.
func (r *reloader) reload(ctx context.Context, why string) (reloadReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.path == "" {
		return reloadReport{Status: "unchanged"}, errors.New("no config file to reload (the daemon runs on defaults and environment)")
	}
	raw, err := os.ReadFile(r.opts.path)
	if err == nil {
		r.sum = sha256.Sum256(raw)
	}
	next, err := config.Load(r.opts.path, os.Environ())
	if err != nil {
		return r.reject(why, err)
	}
	d := diffConfigs(r.cur, next)
	d.Restart = diffConfigs(r.boot, next).Restart
	if d.empty() {
		r.cfgErr.Store(nil)
		r.log.Info("config reloaded: nothing changed", "trigger", why)
		return reloadReport{Status: "unchanged", configDiff: d}, nil
	}
	keepRestartKeys("", reflect.ValueOf(next).Elem(), reflect.ValueOf(r.boot).Elem())
	models := r.models(next)
	reg, err := newRegistry(next, r.records, r.log)
	if err != nil {
		return r.reject(why, err)
	}
	old := r.launch.reg.Swap(reg)
	sc := schedulerConfig(next)
	// Not bounded by the caller: once the loop has the change it applies it,
	// and a client that leaves meanwhile must not get "rejected" for it.
	res, err := r.sched.Reconfigure(context.WithoutCancel(ctx), scheduler.Reconfig{Models: models, Restart: d.Changed, Settings: sc})
	if err != nil {
		r.launch.reg.Store(old)
		return r.reject(why, err)
	}
	r.handler.set(r.newAPI(next, reg))
	r.cur = next
	r.cfgErr.Store(nil)
	rep := reloadReport{Status: "applied", configDiff: d, Restarted: res.Restarted}
	r.log.Info("config reloaded", "trigger", why, "added", d.Added, "removed", d.Removed, "changed", d.Changed,
		"keys", d.Keys, "restart_needed", d.Restart)
	if len(d.Restart) > 0 {
		r.log.Warn("changed keys take effect only after a restart", "keys", d.Restart)
	}
	r.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvConfigReloaded, Reason: diffSummary(d)})
	return rep, nil
}

// reject records a config that was not applied.
func (r *reloader) reject(why string, err error) (reloadReport, error) {
	msg := err.Error()
	r.cfgErr.Store(&msg)
	r.log.Error("config reload rejected; the running config stays in force", "trigger", why, "err", err)
	r.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvConfigRejected, Error: msg})
	return reloadReport{Status: "rejected", Error: msg}, err
}

// models builds the scheduler's models for cfg as serve does at start.
func (r *reloader) models(cfg *config.Config) []scheduler.Model {
	models := schedulerConfig(cfg).Models
	quiet := r.log.With("component", "reload")
	estimateModels(cfg, models, quiet)
	learned, err := r.st.LearnedVRAM()
	if err != nil {
		quiet.Warn("read learned VRAM figures", "err", err)
	}
	applyLearned(cfg, models, learned, quiet)
	return models
}

// diffSummary is one line of what d changes, for the config_reloaded event.
func diffSummary(d configDiff) string {
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{{"added", d.Added}, {"removed", d.Removed}, {"changed", d.Changed}, {"keys", d.Keys}, {"restart needed", d.Restart}} {
		if len(p.names) > 0 {
			parts = append(parts, p.what+": "+strings.Join(p.names, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// run reloads on SIGHUP and, with -watch-config, when the file changes,
// until ctx ends.
func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if r.opts.watch && r.opts.path != "" {
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		tick = t.C
		r.log.Info("watching the config file", "path", r.opts.path)
	}
	var last fileStamp
	if fi, err := os.Stat(r.opts.path); err == nil {
		last = stampOf(fi)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_, _ = r.reload(ctx, "SIGHUP")
		case <-tick:
			fi, err := os.Stat(r.opts.path)
			if err != nil || stampOf(fi) == last {
				continue
			}
			last = stampOf(fi)
			if r.fileChanged() {
				_, _ = r.reload(ctx, "config file changed")
			}
		}
	}
}

// fileStamp is what the watch compares first: cheap, and a change of either
// is worth reading the file for.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{fi.ModTime(), fi.Size()} }

// fileChanged reports whether the file's content differs from the last
// one loaded (an editor's save that rewrites the same bytes does not count).
func (r *reloader) fileChanged() bool {
	raw, err := os.ReadFile(r.opts.path)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return sha256.Sum256(raw) != r.sum
}

// startReloader builds the reloader for the daemon's first config.
func startReloader(ctx context.Context, r *reloader, cfg *config.Config) {
	r.opts.path = r.opts.configPath()
	r.boot, r.cur = cfg, cfg
	if raw, err := os.ReadFile(r.opts.path); err == nil {
		r.sum = sha256.Sum256(raw)
	}
	go r.run(ctx)
}

// redactURL hides the password of a URL such as redis://user:secret@host.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL hidden)"
	}
	return u.Redacted()
}
