package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// End-to-end tests of the scheduling features: built binary, stand-in
// engines, HTTP as a user would.

// schedModel is one model of a scheduling test config.
type schedModel struct {
	name   string
	mb     int
	slots  int
	extra  string // more YAML keys, e.g. "pinned: true"
	engine []string
}

// writeSchedConfig writes a config for models under a budget of total−1000.
func writeSchedConfig(t *testing.T, engine string, total int, sched string, models ...schedModel) e2eSetup {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	sizes := map[string]int{}
	var b strings.Builder
	for _, m := range models {
		path := filepath.Join(dir, m.name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		args, _ := json.Marshal(append([]string{"--test-load-delay", "50ms"}, m.engine...))
		fmt.Fprintf(&b, "    - name: %s\n      model_path: %s\n      vram_mb: %d\n", m.name, path, m.mb)
		if m.extra != "" {
			fmt.Fprintf(&b, "      %s\n", m.extra)
		}
		fmt.Fprintf(&b, "      config: {parallel: %d, context_size: 512, extra_args: %s}\n", max(m.slots, 1), args)
		sizes[m.name] = m.mb
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: %d, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 5, stop_grace_seconds: 2}
scheduling: {%s}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), total, engine, sched, b.String())
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e2eSetup{dir: dir, cfg: path, port: port, sizes: sizes, budget: total - 1000}
}

// submitP submits with a priority.
func (d *daemon) submitP(model, prompt string, prio int) string {
	d.t.Helper()
	var out map[string]any
	if code := d.do("POST", "/jobs", map[string]any{"model": model, "prompt": prompt, "priority": prio}, &out); code != 202 {
		d.t.Fatalf("submit %s: %d %v", model, code, out)
	}
	return out["job_id"].(string)
}

// modelState returns a model's entry in GET /models.
func (d *daemon) modelState(name string) map[string]any {
	d.t.Helper()
	var ms struct{ Models []map[string]any }
	d.do("GET", "/models", nil, &ms)
	for _, m := range ms.Models {
		if m["name"] == name {
			return m
		}
	}
	d.t.Fatalf("model %s not in /models", name)
	return nil
}

// waitModel polls until name's state is want.
func (d *daemon) waitModel(name, want string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := d.modelState(name)
		if m["state"] == want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("model %s is %v after %v, want %s", name, m["state"], timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) jobField(id string) map[string]any {
	d.t.Helper()
	var v map[string]any
	if code := d.do("GET", "/jobs/"+id, nil, &v); code != 200 {
		d.t.Fatalf("GET /jobs/%s: %d", id, code)
	}
	return v
}

// waitRunning polls until the job is running.
func (d *daemon) waitRunning(id string) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.jobField(id)["status"] != "running" {
		if time.Now().After(deadline) {
			d.t.Fatalf("job %s never ran", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// words is a prompt of n words: the stand-in answers with n+1 tokens.
func words(n int) string { return strings.TrimSpace(strings.Repeat("word ", n)) }

func TestE2E_CancelQueuedAndRunning(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 10000, "policy: batch",
		schedModel{name: "slow", mb: 4000, slots: 1, engine: []string{"--test-token-delay", "50ms"}})
	d := startDaemon(t, bin, s.cfg, s.port)

	running := d.submit("slow", words(400)) // 20 s of tokens
	d.waitRunning(running)
	queued := d.submit("slow", "never runs")
	if code := d.do("DELETE", "/jobs/"+queued, nil, nil); code != 200 {
		t.Fatalf("cancel queued: %d", code)
	}
	if st := d.jobField(queued)["status"]; st != "cancelled" {
		t.Fatalf("queued job after cancel: %v", st)
	}
	start := time.Now()
	if code := d.do("DELETE", "/jobs/"+running, nil, nil); code != 200 {
		t.Fatalf("cancel running: %d", code)
	}
	// The slot is free again within a second: a new job runs at once.
	for d.modelState("slow")["running"].(float64) != 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("running job's slot not freed within 2s of the cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("slot freed %v after the cancel", time.Since(start))
	if js := d.waitJob(running, 5*time.Second); js.Status != "cancelled" {
		t.Fatalf("running job after cancel: %+v", js)
	}
	next := d.submit("slow", "short one")
	if js := d.waitJob(next, 10*time.Second); js.Status != "completed" {
		t.Fatalf("job after cancels: %+v", js)
	}
	if st := d.jobField(queued)["status"]; st != "cancelled" {
		t.Fatalf("cancelled job ran later: %v", st)
	}
}

func TestE2E_PriorityOrder(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 10000, "policy: batch",
		schedModel{name: "one", mb: 4000, slots: 1, engine: []string{"--test-token-delay", "20ms"}})
	d := startDaemon(t, bin, s.cfg, s.port)
	blocker := d.submit("one", words(50)) // holds the only slot ~1 s
	d.waitRunning(blocker)
	ids := map[string]int{}
	for _, p := range []int{-5, 0, 10, 0, 3} {
		ids[d.submitP("one", fmt.Sprintf("prio %d", p), p)] = p
	}
	type started struct {
		at   time.Time
		prio int
	}
	var order []started
	for id, p := range ids {
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("job %s: %+v", id, js)
		}
		at, err := time.Parse(time.RFC3339Nano, d.jobField(id)["started_at"].(string))
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, started{at, p})
	}
	slices.SortFunc(order, func(a, b started) int { return a.at.Compare(b.at) })
	var prios []int
	for _, o := range order {
		prios = append(prios, o.prio)
	}
	if !slices.Equal(prios, []int{10, 3, 0, 0, -5}) {
		t.Fatalf("jobs started in priority order %v, want [10 3 0 0 -5]", prios)
	}
}

func TestE2E_PinPreloadTTL(t *testing.T) {
	bin, engine := buildBinaries(t)
	// Budget 9000: two of the three 4000 MiB models fit.
	s := writeSchedConfig(t, engine, 10000, "policy: batch",
		schedModel{name: "pinned", mb: 4000, extra: "pinned: true"},
		schedModel{name: "eager", mb: 4000, extra: "preload: true"},
		schedModel{name: "brief", mb: 4000, extra: "ttl_seconds: 1"})
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, s.sizes, s.budget)

	d.waitModel("eager", "ready", 10*time.Second) // preloaded with no job
	if js := d.waitJob(d.submit("pinned", "x"), 20*time.Second); js.Status != "completed" {
		t.Fatalf("pinned job: %+v", js)
	}
	// eager is now more recently used than nothing, pinned is older: brief
	// must evict eager, never the pinned model.
	if js := d.waitJob(d.submit("eager", "touch"), 20*time.Second); js.Status != "completed" {
		t.Fatalf("eager job: %+v", js)
	}
	time.Sleep(20 * time.Millisecond)
	if js := d.waitJob(d.submit("brief", "y"), 20*time.Second); js.Status != "completed" {
		t.Fatalf("brief job: %+v", js)
	}
	for _, ev := range events.ofType("model_evicted") {
		if ev["model"] == "pinned" {
			t.Fatalf("pinned model evicted: %v", ev)
		}
	}
	if st := d.modelState("pinned")["state"]; st != "ready" {
		t.Fatalf("pinned model is %v", st)
	}
	// brief has ttl 1s: it unloads by itself.
	d.waitModel("brief", "unloaded", 10*time.Second)
	found := false
	for _, ev := range events.ofType("model_unloaded") {
		found = found || (ev["model"] == "brief" && strings.Contains(fmt.Sprint(ev["reason"]), "ttl"))
	}
	if !found {
		t.Fatalf("no ttl unload event for brief: %v", events.ofType("model_unloaded"))
	}
}

func TestE2E_LongJobNotEvictedByShortJobs(t *testing.T) {
	bin, engine := buildBinaries(t)
	// Budget 9000: only one of the two 6000 MiB models fits.
	s := writeSchedConfig(t, engine, 10000, "policy: batch, max_wait_seconds: 1",
		schedModel{name: "long", mb: 6000, engine: []string{"--test-token-delay", "20ms"}},
		schedModel{name: "chat", mb: 6000, slots: 2})
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, s.sizes, s.budget)

	long := d.submit("long", words(100)) // ~2 s of generation
	d.waitRunning(long)
	var chats []string
	for i := range 15 {
		chats = append(chats, d.submit("chat", fmt.Sprintf("quick %d", i)))
		time.Sleep(100 * time.Millisecond)
	}
	js := d.waitJob(long, 30*time.Second)
	if js.Status != "completed" || js.Attempts != 1 {
		t.Fatalf("long job: %+v, want completed on its first attempt", js)
	}
	for _, id := range chats {
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("chat job: %+v", js)
		}
	}
	// The chat model loaded only after the long job finished.
	var longDone, chatReady float64
	for _, ev := range events.ofType("job_finished") {
		if ev["job_id"] == long {
			longDone = ev["seq"].(float64)
		}
	}
	for _, ev := range events.ofType("model_ready") {
		if ev["model"] == "chat" && chatReady == 0 {
			chatReady = ev["seq"].(float64)
		}
	}
	if longDone == 0 || chatReady == 0 || chatReady < longDone {
		t.Fatalf("chat ready at event %v, long job finished at event %v: the long job was displaced", chatReady, longDone)
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.over) > 0 {
		t.Fatalf("ledger over budget: %v", events.over)
	}
}
