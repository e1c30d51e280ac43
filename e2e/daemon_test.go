package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests build bin/vramcram and the stand-in engine once and
// drive them over HTTP as a user would.

// storeFile is the store's file name under storage.data_dir.
const storeFile = "vramcram.db"

// built holds binaries built once per test binary, of one flavour.
type built struct {
	once       sync.Once
	err        error
	bin, stand string
}

// raced is the daemon built with the race detector (the tests); plain is
// without it, for figures that mean something (benchmarks, memory peaks).
var raced, plain built

// get builds vramcram (with -race when race) and the stand-in engine once.
func (bd *built) get(tb testing.TB, race bool) (string, string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("end-to-end: skipped with -short")
	}
	bd.once.Do(func() {
		dir, err := os.MkdirTemp("", "vramcram-e2e-bin")
		if err != nil {
			bd.err = err
			return
		}
		bd.bin, bd.stand = filepath.Join(dir, "vramcram"), filepath.Join(dir, "testengine")
		daemon := []string{"build", "-o", bd.bin, "."}
		if race {
			daemon = []string{"build", "-race", "-o", bd.bin, "."}
		}
		for _, args := range [][]string{daemon, {"build", "-o", bd.stand, "./runner/testengine"}} {
			if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
				bd.err = fmt.Errorf("go %v: %v\n%s", args, err, out)
				return
			}
		}
	})
	if bd.err != nil {
		tb.Fatal(bd.err)
	}
	return bd.bin, bd.stand
}

// buildBinaries gives the race-detecting daemon and the stand-in engine.
func buildBinaries(t *testing.T) (string, string) { return raced.get(t, true) }

// buildPlain gives the daemon built without the race detector, whose
// shadow memory and slowdown would hide what a user's daemon does, and the
// stand-in engine.
func buildPlain(tb testing.TB) (string, string) { return plain.get(tb, false) }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects the daemon's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan struct{}
	key  string // sent as a Bearer token by do, when set
}

// startDaemon runs bin with cfgPath on port and waits for /health.
func startDaemon(t *testing.T, bin, cfgPath string, port int, env ...string) *daemon {
	t.Helper()
	return startDaemonArgs(t, bin, []string{"-config", cfgPath}, port, env...)
}

// startDaemonArgs runs bin with args on port and waits for /health.
func startDaemonArgs(t *testing.T, bin string, args []string, port int, env ...string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), logs: logs, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		// SIGTERM first, so the daemon stops its engines; SIGKILL if it hangs.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", lastLines(logs.String(), 60))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(d.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited during start-up:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not healthy after 60s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanEnv drops VRAMCRAM_* variables of the test's own environment: unknown
// ones would be config errors.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VRAMCRAM_") {
			out = append(out, kv)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (d *daemon) signal(sig syscall.Signal, wait time.Duration) {
	d.t.Helper()
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(wait):
		d.t.Fatalf("daemon did not exit %s after %v", sig, wait)
	}
}

func (d *daemon) do(method, path string, body any, out any) int {
	d.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.url+path, r)
	req.Header.Set("Content-Type", "application/json")
	if d.key != "" {
		req.Header.Set("Authorization", "Bearer "+d.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			d.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

func (d *daemon) submit(model, prompt string) string {
	d.t.Helper()
	var out struct{ JobID, Status string }
	var raw map[string]any
	code := d.do("POST", "/jobs", map[string]any{"model": model, "prompt": prompt}, &raw)
	b, _ := json.Marshal(raw)
	_ = json.Unmarshal(b, &out)
	if code != http.StatusAccepted || raw["job_id"] == nil || raw["status"] != "queued" {
		d.t.Fatalf("submit %s: %d %s", model, code, b)
	}
	return raw["job_id"].(string)
}

type jobStatus struct {
	JobID    string `json:"job_id"`
	Status   string `json:"status"`
	Model    string `json:"model"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// waitJob polls until the job is final and returns its status.
func (d *daemon) waitJob(id string, timeout time.Duration) jobStatus {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var js jobStatus
		if code := d.do("GET", "/jobs/"+id, nil, &js); code != 200 {
			d.t.Fatalf("GET /jobs/%s: %d", id, code)
		}
		switch js.Status {
		case "completed", "failed", "cancelled":
			return js
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("job %s still %s after %v", id, js.Status, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *daemon) resultText(id string) string {
	d.t.Helper()
	var res struct{ Type, Text string }
	if code := d.do("GET", "/jobs/"+id+"/result", nil, &res); code != 200 || res.Type != "llm" {
		d.t.Fatalf("result %s: %d %+v", id, code, res)
	}
	return res.Text
}

// eventLog follows /events and checks the ledger at every event.
type eventLog struct {
	mu      sync.Mutex
	events  []map[string]any
	sizes   map[string]int
	budget  int
	alive   map[string]int
	maxSeen int
	over    []string
}

func followEvents(t *testing.T, url string, sizes map[string]int, budget int) *eventLog {
	t.Helper()
	el := &eventLog{sizes: sizes, budget: budget, alive: map[string]int{}}
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev map[string]any
			if json.Unmarshal([]byte(line), &ev) == nil {
				el.add(ev)
			}
		}
	}()
	return el
}

func (el *eventLog) add(ev map[string]any) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.events = append(el.events, ev)
	model, _ := ev["model"].(string)
	switch ev["type"] {
	case "model_loading":
		el.alive[model]++
	case "model_unloaded":
		el.alive[model]--
	default:
		return
	}
	sum := 0
	for m, n := range el.alive {
		sum += n * el.sizes[m]
	}
	el.maxSeen = max(el.maxSeen, sum)
	if sum > el.budget {
		el.over = append(el.over, fmt.Sprintf("after %v %s: %d MiB reserved > budget %d", ev["type"], model, sum, el.budget))
	}
}

func (el *eventLog) ofType(typ string) []map[string]any {
	el.mu.Lock()
	defer el.mu.Unlock()
	var out []map[string]any
	for _, ev := range el.events {
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// engineProcs lists live stand-in engine processes (pid → model file) by
// scanning /proc for the binary.
func engineProcs(bin string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if args[0] != bin {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue // a zombie holds nothing
			}
		}
		model := ""
		for i, a := range args {
			if a == "-m" && i+1 < len(args) {
				model = filepath.Base(args[i+1])
			}
		}
		out[pid] = model
	}
	return out
}

// sampleEngines checks, every few ms until stop, that the engines alive at
// once never hold more than the budget.
func sampleEngines(bin string, sizes map[string]int, budget int) (stop func() (maxMB int, over []string)) {
	quit := make(chan struct{})
	res := make(chan struct {
		max  int
		over []string
	}, 1)
	go func() {
		peak := 0
		var over []string
		for {
			sum := 0
			for _, m := range engineProcs(bin) {
				sum += sizes[strings.TrimSuffix(m, ".gguf")]
			}
			peak = max(peak, sum)
			if sum > budget {
				over = append(over, fmt.Sprintf("%d MiB of engines alive > budget %d", sum, budget))
			}
			select {
			case <-quit:
				res <- struct {
					max  int
					over []string
				}{peak, over}
				return
			case <-time.After(3 * time.Millisecond):
			}
		}
	}()
	return func() (int, []string) {
		close(quit)
		r := <-res
		return r.max, r.over
	}
}

type e2eSetup struct {
	dir, cfg string
	port     int
	sizes    map[string]int
	budget   int
}

// writeE2EConfig writes a config with three 4000 MiB models of which two fit
// the 9000 MiB budget.
func writeE2EConfig(t *testing.T, engine string, extra ...string) e2eSetup {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	sizes := map[string]int{"alpha": 4000, "beta": 4000, "gamma": 4000}
	var models strings.Builder
	for _, name := range []string{"alpha", "beta", "gamma"} {
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--test-load-delay", "50ms", "--test-token-delay", "2ms"}, extra...)
		q, _ := json.Marshal(args)
		// 16384 / 2 slots: prompts of thousands of words fit a slot (the
		// stand-in refuses longer ones, as llama-server does).
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 4000\n      config: {parallel: 2, context_size: 16384, extra_args: %s}\n", name, path, q)
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 5}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), engine, models.String())
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e2eSetup{dir: dir, cfg: path, port: port, sizes: sizes, budget: 9000}
}

func TestE2E_ServesThreeModelsInTwoSlotsOfVRAM(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	stopSampling := sampleEngines(engine, s.sizes, s.budget)
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, s.sizes, s.budget)

	// LRU: alpha, beta, alpha again; gamma must evict beta.
	for _, m := range []string{"alpha", "beta", "alpha"} {
		id := d.submit(m, "warm "+m)
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("%s job: %+v", m, js)
		}
	}
	id := d.submit("gamma", "warm gamma")
	if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
		t.Fatalf("gamma job: %+v", js)
	}
	evicted := events.ofType("model_evicted")
	if len(evicted) != 1 || evicted[0]["model"] != "beta" {
		t.Fatalf("evictions = %v, want exactly beta (least recently used idle)", evicted)
	}

	// Interleaved jobs for all three models.
	prompts := map[string]string{}
	for i := range 30 {
		m := []string{"alpha", "beta", "gamma"}[i%3]
		p := fmt.Sprintf("job %d for %s with a few words", i, m)
		prompts[d.submit(m, p)] = p
	}
	for id, p := range prompts {
		if js := d.waitJob(id, 60*time.Second); js.Status != "completed" {
			t.Fatalf("job %s: %+v", id, js)
		}
		if got, want := d.resultText(id), "echo: "+p; got != want {
			t.Fatalf("result %q, want %q", got, want)
		}
	}

	var health map[string]any
	if code := d.do("GET", "/health", nil, &health); code != 200 || health["status"] != "healthy" {
		t.Fatalf("health %d %v", code, health)
	}
	if r := health["vram_reserved_mb"].(float64); r > float64(s.budget) {
		t.Fatalf("reserved %v > budget", r)
	}
	var models struct{ Models []map[string]any }
	d.do("GET", "/models", nil, &models)
	if len(models.Models) != 3 {
		t.Fatalf("models = %v", models)
	}

	// SIGTERM: graceful stop leaves no engine behind.
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(engine); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
	requireWithinBudget(t, stopSampling, events)
}

func TestE2E_KillNineLosesNoJob(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	long := strings.Repeat("word ", 60)
	ids := map[string]string{}
	for i := range 24 {
		m := []string{"alpha", "beta", "gamma"}[i%3]
		p := fmt.Sprintf("crash %d %s", i, long)
		ids[d.submit(m, p)] = p
	}
	// Wait until some jobs run, then kill VramCram outright.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var h map[string]any
		d.do("GET", "/health", nil, &h)
		if r, _ := h["running"].(float64); r > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no job started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := engineProcs(engine)
	d.signal(syscall.SIGKILL, 10*time.Second)
	if len(before) == 0 {
		t.Fatal("no engine was running at the kill")
	}

	d2 := startDaemon(t, bin, s.cfg, s.port)
	for pid := range before {
		if _, alive := engineProcs(engine)[pid]; alive {
			t.Fatalf("engine %d from the killed run survived the restart", pid)
		}
	}
	for id, p := range ids {
		js := d2.waitJob(id, 90*time.Second)
		if js.Status != "completed" {
			t.Fatalf("job %s after restart: %+v", id, js)
		}
		if got := d2.resultText(id); got != strings.Join(strings.Fields("echo: "+p), " ") {
			t.Fatalf("job %s text %q", id, got)
		}
	}
	d2.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(engine); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
}

func TestE2E_ExampleConfigStartsWithoutEngines(t *testing.T) {
	bin, _ := buildBinaries(t)
	port := freePort(t)
	d := startDaemon(t, bin, "config.example.yaml", port,
		"VRAMCRAM_SERVER__PORT="+strconv.Itoa(port),
		"VRAMCRAM_SERVER__METRICS_PORT=0",
		"VRAMCRAM_STORAGE__DATA_DIR="+t.TempDir(),
		"VRAMCRAM_INFERENCE__LLAMA_SERVER_PATH=/nonexistent/llama-server",
	)
	var models struct{ Models []map[string]any }
	if code := d.do("GET", "/models", nil, &models); code != 200 || len(models.Models) == 0 {
		t.Fatalf("/models: %d %v", code, models)
	}
	for _, m := range models.Models {
		if m["state"] != "unavailable" || m["reason"] == "" {
			t.Fatalf("model %v: want unavailable with a reason", m)
		}
	}
	name := models.Models[0]["name"].(string)
	var errBody struct {
		Error struct{ Code, Message string }
	}
	code := d.do("POST", "/jobs", map[string]any{"model": name, "prompt": "hi"}, &errBody)
	if code != http.StatusServiceUnavailable || errBody.Error.Code != "model_unavailable" || !strings.Contains(errBody.Error.Message, "not found") {
		t.Fatalf("submit to unavailable model: %d %+v", code, errBody)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
}

// buildPlainBin gives the daemon built without the race detector.
func buildPlainBin(tb testing.TB) string {
	bin, _ := buildPlain(tb)
	return bin
}

// requireWithinBudget stops the process sampler and fails the test if the
// live engines or the ledger (events) ever went over the budget; it logs
// the peaks.
func requireWithinBudget(t *testing.T, stopSampling func() (int, []string), events *eventLog) {
	t.Helper()
	peak, over := stopSampling()
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(over)+len(events.over) > 0 {
		t.Fatalf("budget exceeded: processes %v, ledger %v", over, events.over)
	}
	t.Logf("peak VRAM of live engines %d MiB, of the ledger %d MiB, budget %d MiB", peak, events.maxSeen, events.budget)
}
