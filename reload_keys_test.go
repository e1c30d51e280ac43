package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"net/http"
	"net/http/httptest"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/config"
	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

func runnerCfg() runner.Config { return runner.Config{} }

// cutCtx ends right after the request reached the scheduler: its first
// Done is open, every later one closed (a client that hangs up mid-reload).
type cutCtx struct {
	context.Context
	n      atomic.Int32
	open   chan struct{}
	closed chan struct{}
}

func newCutCtx() *cutCtx {
	c := &cutCtx{Context: context.Background(), open: make(chan struct{}), closed: make(chan struct{})}
	close(c.closed)
	return c
}
func (c *cutCtx) Done() <-chan struct{} {
	if c.n.Add(1) >= 2 {
		return c.closed
	}
	return c.open
}
func (c *cutCtx) Err() error {
	if c.n.Load() >= 2 {
		return context.Canceled
	}
	return nil
}

const reviewBase = `storage: {data_dir: DIR/data}
vram: {total_mb: 10000, safety_margin_mb: 1000}
models:
  llm:
    - name: a
      model_path: DIR/a.gguf
      vram_mb: 1000
`

// A client that leaves POST /admin/reload after the change reached the
// scheduler does not get it "rejected" while the scheduler applies it (the
// API, the registry and the running config then disagreed with it).
func TestReload_ClientLeavingDoesNotSplitTheConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(s, "DIR", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(reviewBase)
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "data"), 0o750)
	st, err := store.Open(filepath.Join(dir, "data", storeFile), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := discardLog()
	devs, source, err := openDevices(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDevices(devs, log)
	reg, err := newRegistry(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	launch := newSwapLauncher(reg)
	sched, err := scheduler.New(fullSchedulerConfig(cfg, st, schedulerDevices(devs, source, false), log), st, launch, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sched.Start(ctx)
	defer sched.Stop(context.Background())
	met := api.NewMetrics(metricsConfig(cfg, log), sched, st)
	defer met.Close()
	rl := &reloader{opts: reloadOpts{path: path}, log: log, sched: sched, st: st, launch: launch, handler: &swapHandler{}, met: met, started: time.Now()}
	rl.handler.set(rl.newAPI(cfg, reg))
	startReloader(ctx, rl, cfg)

	write(reviewBase + "    - name: b\n      model_path: DIR/b.gguf\n      vram_mb: 1000\n")
	rep, err := rl.reload(newCutCtx(), "POST /admin/reload")
	snap, _ := sched.Snapshot(context.Background())
	var names []string
	for _, m := range snap.Models {
		names = append(names, m.Name)
	}
	if err != nil || rep.Status != "applied" || !strings.Contains(strings.Join(names, ","), "b") || len(rl.cur.Models.LLM) != 2 {
		t.Fatalf("reload %q (%v); scheduler models %v; running config models %d: want applied everywhere", rep.Status, err, names, len(rl.cur.Models.LLM))
	}
}

// A GGUF whose general.architecture is a uint32 (no tensors): 64 bytes.
func writeOddGGUF(t *testing.T, path string) {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(0)) // tensors
	le(uint64(1)) // kvs
	key := "general.architecture"
	le(uint64(len(key)))
	b.WriteString(key)
	le(uint32(4)) // uint32
	le(uint32(7))
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// vramcram check on a model file with odd metadata answers (it panicked).
func TestCheck_OddGGUFIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeOddGGUF(t, filepath.Join(dir, "a.gguf"))
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte(strings.ReplaceAll(reviewBase, "DIR", dir)), 0o600)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("vramcram check panicked on a 64-byte model file: %v", p)
		}
	}()
	var out, errOut bytes.Buffer
	_ = run([]string{"check", "-config", path}, &out, &errOut)
}

type rig struct {
	dir, path string
	rl        *reloader
	sched     *scheduler.Scheduler
	write     func(string)
}

func newRig(t *testing.T, body string) *rig {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(s, "DIR", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(body)
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(cfg.Storage.DataDir, 0o750)
	st, err := store.Open(filepath.Join(cfg.Storage.DataDir, storeFile), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := discardLog()
	devs, source, _ := openDevices(cfg, log)
	reg, _ := newRegistry(cfg, nil, log)
	launch := newSwapLauncher(reg)
	sched, err := scheduler.New(fullSchedulerConfig(cfg, st, schedulerDevices(devs, source, false), log), st, launch, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sched.Start(ctx)
	t.Cleanup(func() { cancel(); sched.Stop(context.Background()) })
	rl := &reloader{opts: reloadOpts{path: path}, log: log, sched: sched, st: st, launch: launch, handler: &swapHandler{}, started: time.Now()}
	rl.handler.set(rl.newAPI(cfg, reg))
	startReloader(ctx, rl, cfg)
	return &rig{dir: dir, path: path, rl: rl, sched: sched, write: write}
}

// server.host needs a restart: until then the Host guard stays as the
// listener is (a reload to 0.0.0.0 turned the DNS-rebinding guard off while
// the daemon still listened on loopback).
func TestReload_RestartKeyHostStaysUntilRestart(t *testing.T) {
	const base = "server: {host: HOST, api_keys: [k], allow_insecure_remote: true}\nstorage: {data_dir: DIR/data}\nvram: {total_mb: 10000}\n"
	r := newRig(t, strings.ReplaceAll(base, "HOST", "127.0.0.1"))
	try := func() int {
		req := httptest.NewRequest("GET", "/health", nil)
		req.Host = "attacker.example"
		w := httptest.NewRecorder()
		r.rl.handler.ServeHTTP(w, req)
		return w.Code
	}
	before := try()
	r.write(strings.ReplaceAll(base, "HOST", "0.0.0.0"))
	rep, err := r.rl.reload(context.Background(), "SIGHUP")
	after := try()
	if err != nil || before != http.StatusForbidden || after != http.StatusForbidden || len(rep.Restart) == 0 {
		t.Fatalf("reload %s %v, restart_needed %v; foreign Host before %d, after %d: want 403 both times", rep.Status, err, rep.Restart, before, after)
	}
}

// storage.data_dir needs a restart: until then new engines and the API keep
// the image directory that retention prunes.
func TestReload_RestartKeyDataDirStaysUntilRestart(t *testing.T) {
	const base = "storage: {data_dir: DIR/DD}\nvram: {total_mb: 10000}\n"
	r := newRig(t, strings.ReplaceAll(base, "DD", "data"))
	r.write(strings.ReplaceAll(base, "DD", "other"))
	rep, err := r.rl.reload(context.Background(), "SIGHUP")
	got := diffusionLauncher(r.rl.cur, nil, runnerCfg()).ImageDir
	if err != nil || len(rep.Restart) == 0 || got != filepath.Join(r.dir, "data", "images") {
		t.Fatalf("reload %v, restart_needed %v; images go to %s, want the old data dir's", err, rep.Restart, got)
	}
}
