package api_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
)

// withMetrics adds metrics to a test server: the handler is rebuilt with
// them, and they are closed at cleanup.
func withMetrics(t *testing.T, b *testBundle) *api.Metrics {
	t.Helper()
	m := api.NewMetrics(api.MetricsConfig{Models: []string{"llama", "qwen", "sd"}, Version: "v-test"}, b.sched, b.store)
	t.Cleanup(m.Close)
	cfg := b.cfg
	cfg.Metrics = m
	b.handler = api.New(cfg, b.ctl, b.store).Handler()
	return m
}

// scrape returns the text exposition of m.
func scrape(t *testing.T, m *api.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// sample returns the value of the series written exactly as series (name and
// labels in the exposition's sorted order), or false.
func sample(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}

// waitSample scrapes until series has the value want (events are applied by
// the metrics goroutine, so they show up shortly after Publish).
func waitSample(t *testing.T, m *api.Metrics, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		text := scrape(t, m)
		got, ok := sample(text, series)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v), want %v\n%s", series, got, ok, want, grepLines(text, "vramcram_"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantSample(t *testing.T, text, series string, want float64) {
	t.Helper()
	got, ok := sample(text, series)
	if !ok || got != want {
		t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetrics_Events(t *testing.T) {
	b := setup(t)
	m := withMetrics(t, b)
	t0 := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, ev := range []scheduler.Event{
		{Type: scheduler.EvJobQueued, Model: "llama", JobID: "j1", Time: at(0)},
		{Type: scheduler.EvModelLoading, Model: "llama", VRAMMB: 4000, Time: at(0)},
		{Type: scheduler.EvModelReady, Model: "llama", VRAMMB: 4000, Seconds: 1.5, Time: at(1.5)},
		{Type: scheduler.EvJobStarted, Model: "llama", JobID: "j1", Time: at(2)},
		{Type: scheduler.EvJobProgress, Model: "llama", JobID: "j1", Tokens: 1, Chunk: "hi", Time: at(2.5)},
		// The engine crashes: the job goes back to the queue and runs again.
		{Type: scheduler.EvModelFailed, Model: "llama", Error: "engine exited: engine llama exited with code 2", Time: at(3)},
		{Type: scheduler.EvJobFinished, Model: "llama", JobID: "j1", State: "queued", Error: "engine exited", Time: at(3)},
		{Type: scheduler.EvJobStarted, Model: "llama", JobID: "j1", Time: at(4)},
		{Type: scheduler.EvJobFinished, Model: "llama", JobID: "j1", State: "completed", Time: at(9)},
		// A queued job is cancelled: counted, but it has no run time.
		{Type: scheduler.EvJobQueued, Model: "qwen", JobID: "j2", Time: at(10)},
		{Type: scheduler.EvJobFinished, Model: "qwen", JobID: "j2", State: "cancelled", Time: at(11)},
		// qwen evicts llama; the swap lasts from the eviction to qwen ready.
		{Type: scheduler.EvModelEvicted, Model: "llama", Reason: "evicted for qwen", Time: at(20)},
		{Type: scheduler.EvModelUnloaded, Model: "llama", Time: at(21)},
		{Type: scheduler.EvReleaseTimeout, Model: "qwen", Error: "still in use", Time: at(22)},
		{Type: scheduler.EvModelLoading, Model: "qwen", Time: at(22)},
		{Type: scheduler.EvModelReady, Model: "qwen", Seconds: 2, Time: at(24)},
		{Type: scheduler.EvModelFailed, Model: "sd", Error: "engine sd exited with code 1: bad file", Time: at(30)},
	} {
		b.bus.Publish(ev)
	}
	// Events are applied in order: once the last shows, all have.
	waitSample(t, m, `vramcram_model_load_failures_total{model="sd"}`, 1)
	text := scrape(t, m)
	for series, want := range map[string]float64{
		`vramcram_jobs_submitted_total{model="llama"}`:                    1,
		`vramcram_jobs_submitted_total{model="qwen"}`:                     1,
		`vramcram_jobs_finished_total{model="llama",state="queued"}`:      1,
		`vramcram_jobs_finished_total{model="llama",state="completed"}`:   1,
		`vramcram_jobs_finished_total{model="qwen",state="cancelled"}`:    1,
		`vramcram_jobs_finished_total{model="sd",state="failed"}`:         0,
		`vramcram_job_wait_seconds_count{model="llama"}`:                  2,
		`vramcram_job_wait_seconds_sum{model="llama"}`:                    3, // 2 s, then 1 s after the requeue
		`vramcram_job_run_seconds_sum{model="llama",state="queued"}`:      1,
		`vramcram_job_run_seconds_sum{model="llama",state="completed"}`:   5,
		`vramcram_job_run_seconds_count{model="llama",state="completed"}`: 1,
		`vramcram_model_loads_total{model="llama"}`:                       1,
		`vramcram_model_loads_total{model="qwen"}`:                        1,
		`vramcram_model_load_seconds_sum{model="llama"}`:                  1.5,
		`vramcram_model_load_seconds_bucket{model="llama",le="2.5"}`:      1,
		`vramcram_model_load_seconds_bucket{model="llama",le="1"}`:        0,
		`vramcram_engine_crashes_total{model="llama"}`:                    1,
		`vramcram_model_load_failures_total{model="llama"}`:               0,
		`vramcram_model_evictions_total{model="llama"}`:                   1,
		`vramcram_model_swap_seconds_sum{model="qwen"}`:                   4,
		`vramcram_model_swap_seconds_count{model="qwen"}`:                 1,
		`vramcram_vram_release_timeouts_total{model="qwen"}`:              1,
		`vramcram_metrics_events_dropped_total`:                           0,
		`vramcram_build_info{version="v-test"}`:                           1,
	} {
		wantSample(t, text, series, want)
	}
	if _, ok := sample(text, `vramcram_job_run_seconds_count{model="qwen",state="cancelled"}`); ok {
		t.Error("a job cancelled while queued got a run time")
	}
}

func TestMetrics_Snapshot(t *testing.T) {
	b := setup(t)
	used := time.Date(2026, 8, 1, 11, 0, 0, 0, time.UTC)
	b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) {
		return scheduler.Snapshot{
			VRAMSource: "nvml", TotalMB: 24576, BudgetMB: 23552, ReservedMB: 6000, NotOursMB: 500, FreeMB: 17052,
			Models: []scheduler.ModelStatus{
				{Name: "llama", Type: "llm", State: scheduler.ModelBusy, VRAMMB: 6000, ReservedMB: 6400, MeasuredMB: 6400, LearnedMB: 6400, Slots: 2, Running: 2, LastUsed: &used},
				{Name: "qwen", Type: "llm", State: scheduler.ModelUnloaded, EstimateMB: 3000, Slots: 1},
			},
			Devices: []scheduler.DeviceStatus{
				{Index: 0, TotalMB: 24576, BudgetMB: 23552, ReservedMB: 6400, NotOursMB: 500, FreeMB: 16652},
				{Index: 1, TotalMB: 8192, Lost: "reading failed"},
			},
		}, nil
	}
	m := withMetrics(t, b)
	for _, p := range []string{`{"model":"llama","prompt":"a","priority":5}`, `{"model":"llama","prompt":"b"}`, `{"model":"llama","prompt":"c"}`} {
		b.submit(t, p)
	}
	text := scrape(t, m)
	for series, want := range map[string]float64{
		`vramcram_scheduler_up`:                                     1,
		`vramcram_vram_source_info{source="nvml"}`:                  1,
		`vramcram_vram_total_bytes`:                                 24576 << 20,
		`vramcram_vram_budget_bytes`:                                23552 << 20,
		`vramcram_vram_reserved_bytes`:                              6000 << 20,
		`vramcram_vram_not_ours_bytes`:                              500 << 20,
		`vramcram_vram_free_bytes`:                                  17052 << 20,
		`vramcram_queue_depth{model="llama",priority="5"}`:          1,
		`vramcram_queue_depth{model="llama",priority="0"}`:          2,
		`vramcram_queue_depth{model="qwen",priority="0"}`:           0,
		`vramcram_jobs_running{model="llama"}`:                      2,
		`vramcram_model_state{model="llama",state="busy"}`:          1,
		`vramcram_model_state{model="llama",state="ready"}`:         0,
		`vramcram_model_state{model="qwen",state="unloaded"}`:       1,
		`vramcram_model_slots{model="llama"}`:                       2,
		`vramcram_model_vram_reserved_bytes{model="llama"}`:         6400 << 20,
		`vramcram_model_vram_measured_bytes{model="llama"}`:         6400 << 20,
		`vramcram_model_vram_learned_bytes{model="llama"}`:          6400 << 20,
		`vramcram_model_vram_estimate_error_bytes{model="llama"}`:   400 << 20,
		`vramcram_gpu_vram_reserved_bytes{gpu="0"}`:                 6400 << 20,
		`vramcram_gpu_vram_free_bytes{gpu="0"}`:                     16652 << 20,
		`vramcram_gpu_lost{gpu="0"}`:                                0,
		`vramcram_gpu_lost{gpu="1"}`:                                1,
		`vramcram_gpu_vram_budget_bytes{gpu="1"}`:                   0,
		`vramcram_model_vram_configured_bytes{model="llama"}`:       6000 << 20,
		`vramcram_model_vram_estimate_bytes{model="qwen"}`:          3000 << 20,
		`vramcram_model_last_used_timestamp_seconds{model="llama"}`: float64(used.Unix()),
	} {
		wantSample(t, text, series, want)
	}
	// POST /jobs publishes job_queued; the metrics apply it asynchronously.
	waitSample(t, m, `vramcram_jobs_submitted_total{model="llama"}`, 3)
	if _, ok := sample(text, `vramcram_model_last_used_timestamp_seconds{model="qwen"}`); ok {
		t.Error("a model never used has a last-used time")
	}

	// A scheduler that does not answer: the scrape still succeeds.
	b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) { return scheduler.Snapshot{}, errors.New("stalled") }
	text = scrape(t, m)
	wantSample(t, text, `vramcram_scheduler_up`, 0)
	if _, ok := sample(text, `vramcram_vram_budget_bytes`); ok {
		t.Error("VRAM figures reported without a snapshot")
	}
}

func TestMetrics_HTTPRequests(t *testing.T) {
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.APIKeys = []string{"k"} }})
	m := withMetrics(t, b)
	auth := []string{"Authorization", "Bearer k"}
	b.do(t, http.MethodGet, "/health", "")
	b.do(t, http.MethodGet, "/models", "")                             // 401
	b.do(t, http.MethodGet, "/jobs/aaaaaaaaaaaaaaaaaaaa", "", auth...) // 404 on a route
	b.do(t, http.MethodGet, "/no/such/route", "", auth...)
	b.do(t, http.MethodGet, "/another/missing/route", "", auth...)
	b.do(t, "BREW", "/jobs", "", auth...)
	b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"hi"}`, auth...)
	b.do(t, http.MethodPost, "/jobs", `{"model":"nope","prompt":"hi"}`, auth...)
	text := scrape(t, m)
	for series, want := range map[string]float64{
		`vramcram_http_requests_total{code="200",method="GET",route="/health"}`:   1,
		`vramcram_http_requests_total{code="401",method="GET",route="/models"}`:   1,
		`vramcram_http_requests_total{code="404",method="GET",route="/jobs/:id"}`: 1,
		`vramcram_http_requests_total{code="404",method="GET",route="unmatched"}`: 2,
		`vramcram_http_requests_total{code="202",method="POST",route="/jobs"}`:    1,
		`vramcram_http_requests_total{code="404",method="POST",route="/jobs"}`:    1,
	} {
		wantSample(t, text, series, want)
	}
	if !strings.Contains(text, `method="other"`) {
		t.Errorf("an unknown method is not labelled other:\n%s", grepLines(text, "http_requests"))
	}
	if strings.Contains(text, "/no/such/route") || strings.Contains(text, "aaaaaaaa") {
		t.Errorf("request paths leak into labels:\n%s", grepLines(text, "http_requests"))
	}
}

// TestMetrics_Promtool checks a scrape with promtool when it is installed
// (Debian package prometheus); the end-to-end test does the same after a
// real workload.
func TestMetrics_Promtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install --no-install-recommends prometheus)")
	}
	b := setup(t)
	m := withMetrics(t, b)
	b.submit(t, `{"model":"llama","prompt":"a"}`)
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "llama", Seconds: 1})
	waitSample(t, m, `vramcram_model_loads_total{model="llama"}`, 1)
	path := filepath.Join(t.TempDir(), "scrape.txt")
	if err := os.WriteFile(path, []byte(scrape(t, m)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
