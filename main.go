// Command vramcram serves many AI models on one GPU behind one HTTP API: a
// durable bbolt job queue, a scheduler that loads and evicts models within a
// VRAM budget, and supervised llama-server engines.
//
// Usage:
//
//	vramcram [serve] [-config FILE]   run the server (the default command)
//	vramcram check [-config FILE]     validate the config
//	vramcram version                  print the version
//	vramcram help                     list every command
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vramcram/vramcram/cli"
	"github.com/vramcram/vramcram/config"

	"github.com/lmittmann/tint"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches the subcommand and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd, args := splitCommand(args)
	switch cmd {
	case "serve":
		return serveCmd(args, stderr)
	case "check":
		return checkCmd(args, stdout, stderr)
	case "store":
		return storeCmd(args, stdout, stderr)
	case "version":
		printVersion(stdout)
		return 0
	case "help":
		if len(args) > 0 && cli.Has(args[0]) {
			return cli.Main(args[0], []string{"-h"}, cli.NewIO(os.Stdin, stdout, stdout, os.Getenv))
		}
		usage(stdout)
		return 0
	}
	if cli.Has(cmd) {
		return cli.Main(cmd, args, cli.NewIO(os.Stdin, stdout, stderr, os.Getenv))
	}
	fmt.Fprintf(stderr, "vramcram: unknown command %q\n", cmd)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: vramcram [global flags] [command] [flags] [arguments]

Server commands:
  vramcram [serve] [-config FILE]   run the server (default command)
  vramcram check [-config FILE]     validate the config; show each model's VRAM and fit
  vramcram store check|recover [-config FILE]  check or salvage the store file (daemon stopped)
  vramcram version                  print version, commit, Go version, NVML support
  vramcram help [COMMAND]           this text, or a command's flags

Without -config (or VRAMCRAM_CONFIG) the first file found of ./vramcram.yaml,
$XDG_CONFIG_HOME/vramcram/config.yaml (default ~/.config/vramcram/config.yaml)
and /etc/vramcram/config.yaml is used. VRAMCRAM_* variables override keys
(VRAMCRAM_SERVER__PORT=9000 sets server.port). To try VramCram without a GPU
or model files, run "make demo" in the source tree.

Client commands (they talk to a running server: --url or VRAMCRAM_URL,
default http://127.0.0.1:8000; API key from VRAMCRAM_API_KEY):
`)
	cli.Usage(w)
	fmt.Fprint(w, `
Global flags may come before or after the command: vramcram --url URL ps.
  -h, --help      this text          -v, --version   print the version
`)
}

// configFromFlags parses cmd's -config flag and loads the config; on
// failure it has printed why and returns the exit code (2 usage or no config
// file, 1 config).
func configFromFlags(cmd string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (*config.Config, int) {
	cfg, _, code := loadConfigFlags(cmd, args, stderr, extra...)
	return cfg, code
}

// loadConfigFlags is configFromFlags that also returns the file's path. With
// neither -config nor VRAMCRAM_CONFIG it uses the first file of
// configSearchPath that exists; with none it prints how to start and
// returns 2.
func loadConfigFlags(cmd string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (*config.Config, string, int) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("VRAMCRAM_CONFIG"), "config file (YAML); default $VRAMCRAM_CONFIG, else the first of\n"+strings.Join(configSearchPath(os.Getenv), ", "))
	for _, f := range extra { // the command's own flags
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, "", 0
		}
		return nil, "", 2
	}
	if *path == "" {
		found, ok := findConfig(configSearchPath(os.Getenv), fileExists)
		if !ok {
			noConfigHelp(stderr, configSearchPath(os.Getenv))
			return nil, "", 2
		}
		*path = found
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, "", 1
	}
	return cfg, *path, 0
}

func serveCmd(args []string, stderr io.Writer) int {
	var ro reloadOpts // -watch-config (reload_flags.go)
	cfg, path, code := loadConfigFlags("serve", args, stderr, ro.flags)
	if cfg == nil {
		return code
	}
	log := teeLogs(newLogger(cfg.Logging, stderr)) // logs_wiring.go
	log.Info("config", "path", path)
	ro.path, ro.fs = path, nil // the file found, by -config or by the search
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log, ro); err != nil {
		log.Error("vramcram stopped with an error", "err", err)
		return 1
	}
	return 0
}

// newLogger returns tint on a terminal and JSON otherwise (logging.format
// auto). tint leaves colours out when NO_COLOR is set (https://no-color.org).
func newLogger(c config.LoggingConfig, w io.Writer) *slog.Logger {
	format := c.Format
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "tint"
			}
		}
	}
	return buildLogger(format, c.Level, os.Getenv("NO_COLOR") != "", w)
}

// buildLogger returns the slog logger of a resolved format: tint, text or
// json (anything else).
func buildLogger(format, levelName string, noColor bool, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(levelName))
	switch format {
	case "tint":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: noColor}))
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// serve runs the daemon until ctx ends, then shuts down in order: stop
// accepting requests, let running jobs finish (graceful_shutdown_timeout),
// requeue the rest, stop every engine, close the store.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ro reloadOpts) error {
	dataDir := cfg.Storage.DataDir
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	st, fleet, err := openQueue(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	// Background work on the store (batches, retention) ends before it
	// closes, whichever way serve returns.
	bgCtx, stopBackground := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer func() {
		stopBackground()
		background.Wait()
	}()
	if n := st.Recovered(); n > 0 {
		log.Warn("requeued jobs left running by a previous run", "jobs", n)
	}
	bolt, _ := st.(*store.Store) // nil with storage.backend redis
	if bolt != nil {
		if m := bolt.Migrated(); m != nil {
			log.Info("store schema migrated", "from", m.From, "to", m.To, "backup", m.Backup)
		}
	}
	records, err := openEngineRecords(dataDir, log)
	if err != nil {
		return err
	}
	devs, source, err := openDevices(cfg, log.With("component", "vram"))
	if err != nil {
		return err
	}
	defer closeDevices(devs, log)
	for _, d := range devs {
		log.Info("GPU", "vram_source", source, "index", d.Index, "id", d.ID(), "name", d.Name, "vram_total_mb", d.TotalMB,
			"safety_margin_mb", cfg.VRAM.SafetyMarginMB)
	}
	reg, err := newRegistry(cfg, records, log)
	if err != nil {
		return err
	}
	launch := newSwapLauncher(reg) // a reload swaps the registry (reload.go)
	sc := fullSchedulerConfig(cfg, st, schedulerDevices(devs, source, len(cfg.VRAM.Devices) > 0), log)
	if fleet != nil {
		sc.Fleet = fleet
	}
	sched, err := scheduler.New(sc, st, launch, nil, log.With("component", "scheduler"))
	if err != nil {
		return err
	}
	met := api.NewMetrics(metricsConfig(cfg, log), sched, st)
	defer met.Close()
	stopSidecars, err := startScheduler(ctx, cfg, sched, fleet, met, log)
	if err != nil {
		return err
	}
	defer stopSidecars()

	var batches api.Batches
	if bolt != nil { // files and batches live in the bbolt file
		ac := apiConfig(cfg, reg, log)
		ac.Metrics = met
		batches = startBatches(bgCtx, &background, cfg, bolt, sched, &ac, log)
	} else {
		log.Warn(batchesOffReason)
	}
	rl := &reloader{opts: ro, log: log, sched: sched, st: st, records: records, launch: launch, handler: &swapHandler{},
		met: met, started: time.Now(), batches: batches, fleet: fleet}
	rl.handler.set(rl.newAPI(cfg, reg))
	startReloader(ctx, rl, cfg)
	srv := newAPIServer(rl.handler)
	addr := net.JoinHostPort(cfg.Server.Host, strconv.Itoa(cfg.Server.Port))
	ln, err := listenAPI(addr, cfg)
	if err != nil {
		_ = sched.Stop(context.Background())
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("vramcram listening", "addr", "http://"+ln.Addr().String(), "version", version, "models", len(cfg.Models.LLM)+len(cfg.Models.Diffusion))
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	background.Go(func() { retention(bgCtx, st, cfg.Storage.RetentionHours, imageDir(cfg), log) })

	select {
	case <-ctx.Done():
		log.Info("shutting down", "graceful_shutdown_timeout_seconds", cfg.Agents.GracefulShutdownTimeoutSeconds)
	case err = <-srvErr:
		log.Error("HTTP server failed", "err", err)
	}
	rl.handler.closeAll()
	return shutdown(srv, sched, cfg, log, err)
}

// startScheduler starts sched, its fleet membership (if any) and the
// metrics listener. The returned func stops the last two: call it after
// the scheduler has stopped, so that its last events reach the fleet and
// scrapes work during the drain. On error the scheduler is stopped again.
func startScheduler(ctx context.Context, cfg *config.Config, sched *scheduler.Scheduler, fleet *fleetNode, met *api.Metrics,
	log *slog.Logger) (stop func(), err error) {
	sched.Start(ctx)
	stopFleet := func() {}
	if fleet != nil {
		var fctx context.Context
		fctx, stopFleet = context.WithCancel(context.WithoutCancel(ctx))
		fleet.start(fctx, sched)
	}
	stopMetrics, err := serveMetrics(cfg, met, log)
	if err != nil {
		_ = sched.Stop(context.Background())
		stopFleet()
		return nil, err
	}
	return func() {
		stopMetrics()
		stopFleet()
	}, nil
}

// openEngineRecords opens the pid records of the engines under dataDir and
// stops the engines a previous run left behind.
func openEngineRecords(dataDir string, log *slog.Logger) (*runner.Records, error) {
	records, err := runner.OpenRecords(filepath.Join(dataDir, "engines"))
	if err != nil {
		return nil, err
	}
	orphans, err := records.ReapOrphans(5 * time.Second)
	for _, o := range orphans {
		log.Warn("stopped engine left behind by a previous run", "model", o.Model, "pid", o.PID)
	}
	if err != nil {
		log.Warn("reap orphan engines", "err", err)
	}
	return records, nil
}

// fullSchedulerConfig is schedulerConfig with what the running daemon
// adds: the queue bound for requests waiting for a slot, model sizes
// estimated from their files, the sizes learned in earlier runs (read from
// st) and the GPUs.
func fullSchedulerConfig(cfg *config.Config, st jobQueue, devs []scheduler.Device, log *slog.Logger) scheduler.Config {
	sc := schedulerConfig(cfg)
	sc.MaxQueue = cfg.Scheduling.MaxQueue // requests waiting for a slot count too
	estimateModels(cfg, sc.Models, log)
	learned, err := st.LearnedVRAM()
	if err != nil {
		log.Warn("read learned VRAM figures", "err", err)
	}
	applyLearned(cfg, sc.Models, learned, log)
	sc.Devices = devs
	return sc
}

// shutdown stops the API, then the scheduler (which stops the engines). A
// second SIGINT/SIGTERM cuts the wait for running jobs short.
func shutdown(srv *http.Server, sched *scheduler.Scheduler, cfg *config.Config, log *slog.Logger, cause error) error {
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := srv.Shutdown(hctx); err != nil {
		_ = srv.Close() // event streams do not end by themselves
	}
	cancel()
	grace := seconds(cfg.Agents.GracefulShutdownTimeoutSeconds)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: requeueing running jobs now")
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := sched.Stop(sctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return cause
}

// retention deletes finished jobs older than the retention period, hourly,
// and the image directories no job needs any more.
func retention(ctx context.Context, st jobQueue, hours int, images string, log *slog.Logger) {
	if hours <= 0 {
		return
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := st.Cleanup(time.Now().Add(-time.Duration(hours) * time.Hour))
		if err != nil {
			log.Warn("retention cleanup", "err", err)
		} else if n > 0 {
			log.Info("retention removed finished jobs", "jobs", n)
		}
		logPrune(images, st, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
