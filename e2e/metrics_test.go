package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeMetrics GETs the metrics page.
func scrapeMetrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

// sumSeries adds the values of the samples of name whose labels contain
// every one of labels (e.g. `model="alpha"`).
func sumSeries(text, name string, labels ...string) (float64, int) {
	sum, n := 0.0, 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if ok && err == nil {
			sum += v
			n++
		}
	}
	return sum, n
}

// TestE2E_Metrics runs a workload (loads, an eviction, completed, cancelled
// and refused jobs), scrapes server.metrics_port and checks the figures and,
// when promtool is installed, the format.
func TestE2E_Metrics(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	mport := freePort(t)
	d := startDaemon(t, bin, s.cfg, s.port, fmt.Sprintf("VRAMCRAM_SERVER__METRICS_PORT=%d", mport))
	stopAtCleanup(t, d)
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)

	completed := 0
	for _, m := range []string{"alpha", "beta", "alpha", "gamma", "beta"} { // gamma and then beta evict
		id := d.submit(m, "metrics "+m)
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("%s job: %+v", m, js)
		}
		completed++
	}
	long := d.submit("beta", strings.Repeat("word ", 3000))
	waitFor(t, func() string {
		var js jobStatus
		d.do("GET", "/jobs/"+long, nil, &js)
		if js.Status == "running" {
			return "ok"
		}
		return ""
	})
	if code := d.do("DELETE", "/jobs/"+long, nil, nil); code != http.StatusOK {
		t.Fatalf("cancel: %d", code)
	}
	d.waitJob(long, 30*time.Second)
	if code := d.do("POST", "/jobs", map[string]any{"model": "nope", "prompt": "x"}, nil); code != http.StatusNotFound {
		t.Fatalf("unknown model: %d", code)
	}

	// Counters follow events asynchronously: wait for the cancelled job.
	var text string
	waitFor(t, func() string {
		text = scrapeMetrics(t, murl)
		if v, _ := sumSeries(text, "vramcram_jobs_finished_total", `state="cancelled"`); v == 1 {
			return "ok"
		}
		return ""
	})
	checks := []struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}{
		{"vramcram_jobs_submitted_total", nil, func(v float64) bool { return v == float64(completed+1) }, "jobs accepted"},
		{"vramcram_jobs_finished_total", []string{`state="completed"`}, func(v float64) bool { return v == float64(completed) }, "completed jobs"},
		{"vramcram_job_wait_seconds_count", nil, func(v float64) bool { return v == float64(completed+1) }, "one wait per start"},
		{"vramcram_job_run_seconds_count", []string{`state="completed"`}, func(v float64) bool { return v == float64(completed) }, "one run per completion"},
		{"vramcram_model_loads_total", nil, func(v float64) bool { return v >= 4 }, "alpha, beta, gamma, beta again"},
		{"vramcram_model_evictions_total", nil, func(v float64) bool { return v >= 2 }, "gamma and beta evicted someone"},
		{"vramcram_model_swap_seconds_count", nil, func(v float64) bool { return v >= 2 }, "swaps timed"},
		{"vramcram_model_load_seconds_sum", nil, func(v float64) bool { return v > 0 }, "load time"},
		{"vramcram_vram_budget_bytes", nil, func(v float64) bool { return v == 9000<<20 }, "budget 9000 MiB"},
		{"vramcram_vram_reserved_bytes", nil, func(v float64) bool { return v == 8000<<20 }, "two models loaded"},
		{"vramcram_queue_depth", []string{`model="alpha"`}, func(v float64) bool { return v == 0 }, "nothing queued"},
		{"vramcram_scheduler_up", nil, func(v float64) bool { return v == 1 }, "scheduler answering"},
		{"vramcram_http_requests_total", []string{`route="/jobs"`, `method="POST"`, `code="202"`}, func(v float64) bool { return v == float64(completed+1) }, "submissions"},
		{"vramcram_http_requests_total", []string{`route="/jobs"`, `code="404"`}, func(v float64) bool { return v == 1 }, "the refused submission"},
		{"vramcram_http_requests_total", []string{`route="/jobs/:id"`, `method="GET"`}, func(v float64) bool { return v > 0 }, "polls by route template"},
		{"vramcram_engine_crashes_total", nil, func(v float64) bool { return v == 0 }, "no crash"},
		{"process_resident_memory_bytes", nil, func(v float64) bool { return v > 0 }, "process collector"},
	}
	for _, c := range checks {
		v, n := sumSeries(text, c.name, c.labels...)
		if n == 0 || !c.ok(v) {
			t.Errorf("%s%v = %v over %d series: want %s", c.name, c.labels, v, n, c.want)
		}
	}
	if strings.Contains(text, long) {
		t.Error("a job ID leaked into the labels")
	}
	promtoolCheck(t, text)
}

// promtoolCheck runs promtool check metrics on text, or logs why not.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed (Debian package prometheus): format not checked")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
	t.Logf("promtool check metrics: ok (%d lines scraped)", strings.Count(text, "\n"))
}
