package api

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// MetricsScheduler is what the metrics need of the scheduler: the bus, whose
// events feed the counters and histograms, and Snapshot, read at scrape time.
type MetricsScheduler interface {
	Snapshot(ctx context.Context) (scheduler.Snapshot, error)
	Bus() *scheduler.Bus
}

// MetricsStore is what the metrics read of the store: queue depths at scrape
// time, and a job's creation time when its queued event was not seen (jobs
// recovered at start-up).
type MetricsStore interface {
	QueueDepths() (map[string]map[int]int, error)
	Get(id string) (store.Job, error)
}

// MetricsConfig holds the metrics' settings.
type MetricsConfig struct {
	Models  []string // configured model names: their series exist from the start
	Version string
	Logger  *slog.Logger
	// EventBuffer is the bus subscription's buffer; default 4096. Events lost
	// to a full buffer are counted in vramcram_metrics_events_dropped_total.
	EventBuffer int
	// MaxTracked bounds the jobs whose queued or start time is remembered
	// for the wait and run histograms; default 100000.
	MaxTracked int
}

// Metrics keeps VramCram's Prometheus metrics. Counters and histograms follow
// the scheduler's event bus in one goroutine; gauges (queue depths, VRAM
// figures, model states) are read from the scheduler and the store at scrape
// time. Build with NewMetrics, serve Handler, and Close at shutdown.
type Metrics struct {
	cfg   MetricsConfig
	reg   *prometheus.Registry
	sched MetricsScheduler
	store MetricsStore
	log   *slog.Logger
	sub   *scheduler.Subscription
	done  chan struct{}
	once  sync.Once

	submitted, finished, loads, loadFailures *prometheus.CounterVec
	evictions, crashes, releaseTimeouts      *prometheus.CounterVec
	httpRequests                             *prometheus.CounterVec
	wait, run, loadSeconds, swapSeconds      *prometheus.HistogramVec
	tokens                                   tokenMetrics // metrics_tokens.go

	// Owned by the event goroutine.
	queuedAt, startedAt *timeMap
	swapStart           map[string]time.Time // model → first eviction made for it
}

// Histogram buckets, in seconds.
var (
	jobBuckets  = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	loadBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
)

// NewMetrics builds the registry and subscribes to the scheduler's bus at
// once, so no event published after it returns is missed.
func NewMetrics(cfg MetricsConfig, sched MetricsScheduler, st MetricsStore) *Metrics {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 4096
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = 100_000
	}
	m := &Metrics{
		cfg: cfg, reg: prometheus.NewRegistry(), sched: sched, store: st, log: cfg.Logger,
		done:     make(chan struct{}),
		queuedAt: newTimeMap(cfg.MaxTracked), startedAt: newTimeMap(cfg.MaxTracked),
		swapStart: map[string]time.Time{},
	}
	m.register()
	m.sub = sched.Bus().Subscribe(cfg.EventBuffer)
	go m.follow()
	return m
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

func (m *Metrics) register() {
	m.submitted = counterVec("vramcram_jobs_submitted_total", "Jobs accepted by POST /jobs.", "model")
	m.finished = counterVec("vramcram_jobs_finished_total",
		"Job attempts that ended, by outcome: completed, failed, cancelled, or queued (requeued for a retry).", "model", "state")
	m.loads = counterVec("vramcram_model_loads_total", "Engine loads that reached ready.", "model")
	m.loadFailures = counterVec("vramcram_model_load_failures_total", "Engine loads that failed before ready.", "model")
	m.evictions = counterVec("vramcram_model_evictions_total", "Engines evicted (stopped or drained) to make room for another model.", "model")
	m.crashes = counterVec("vramcram_engine_crashes_total",
		"Engines that exited or missed heartbeats after they were ready; each is restarted when work is queued.", "model")
	m.releaseTimeouts = counterVec("vramcram_vram_release_timeouts_total",
		"Loads that went ahead before the meter showed an exited engine's memory free.", "model")
	m.httpRequests = counterVec("vramcram_http_requests_total", "API requests by method, route template and status code.",
		"method", "route", "code")
	m.wait = histogramVec("vramcram_job_wait_seconds", "Time from queued (or requeued) to started.", jobBuckets, "model")
	m.run = histogramVec("vramcram_job_run_seconds", "Time from started to the end of the attempt, by outcome.", jobBuckets, "model", "state")
	m.loadSeconds = histogramVec("vramcram_model_load_seconds", "Engine start to ready.", loadBuckets, "model")
	m.swapSeconds = histogramVec("vramcram_model_swap_seconds",
		"From the first eviction made for a model to that model being ready (drain, stop, memory release and load).",
		loadBuckets, "model")
	for _, name := range m.cfg.Models {
		for _, v := range []*prometheus.CounterVec{m.submitted, m.loads, m.loadFailures, m.evictions, m.crashes} {
			v.WithLabelValues(name)
		}
		for _, st := range []string{"completed", "failed", "cancelled"} {
			m.finished.WithLabelValues(name, st)
		}
	}
	m.tokens = newTokenMetrics(m.cfg.Models)
	m.reg.MustRegister(m.tokens.collectors()...)
	m.reg.MustRegister(
		m.submitted, m.finished, m.loads, m.loadFailures, m.evictions, m.crashes, m.releaseTimeouts,
		m.httpRequests, m.wait, m.run, m.loadSeconds, m.swapSeconds,
		&snapshotCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// Handler serves the registry in the Prometheus text format. A failing part
// of a scrape (the scheduler not answering) leaves its series out and sets
// vramcram_scheduler_up to 0 rather than failing the whole scrape.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Close stops following the bus. Safe to call more than once.
func (m *Metrics) Close() {
	m.once.Do(func() {
		m.sub.Close()
		<-m.done
	})
}

// follow applies bus events until the subscription is closed.
func (m *Metrics) follow() {
	defer close(m.done)
	for ev := range m.sub.C {
		m.apply(ev)
	}
}

// apply updates the metrics for one event.
func (m *Metrics) apply(ev scheduler.Event) {
	switch ev.Type {
	case scheduler.EvJobQueued:
		m.submitted.WithLabelValues(ev.Model).Inc()
		m.queuedAt.set(ev.JobID, ev.Time)
	case scheduler.EvJobStarted:
		if q, ok := m.queuedSince(ev.JobID); ok {
			m.wait.WithLabelValues(ev.Model).Observe(nonNegative(ev.Time.Sub(q)))
		}
		m.queuedAt.delete(ev.JobID)
		m.startedAt.set(ev.JobID, ev.Time)
	case scheduler.EvJobFinished:
		m.jobFinished(ev)
		m.tokens.apply(ev)
	case scheduler.EvModelReady:
		m.loads.WithLabelValues(ev.Model).Inc()
		m.loadSeconds.WithLabelValues(ev.Model).Observe(ev.Seconds)
		if t, ok := m.swapStart[ev.Model]; ok {
			m.swapSeconds.WithLabelValues(ev.Model).Observe(nonNegative(ev.Time.Sub(t)))
			delete(m.swapStart, ev.Model)
		}
	case scheduler.EvModelFailed:
		// The scheduler reports crashes of a ready engine as "engine exited: …"
		// and everything else as a failed load.
		if strings.HasPrefix(ev.Error, "engine exited: ") {
			m.crashes.WithLabelValues(ev.Model).Inc()
		} else {
			m.loadFailures.WithLabelValues(ev.Model).Inc()
			delete(m.swapStart, ev.Model)
		}
	case scheduler.EvModelUnavailable:
		delete(m.swapStart, ev.Model)
	case scheduler.EvModelEvicted:
		m.evictions.WithLabelValues(ev.Model).Inc()
		if forModel, ok := strings.CutPrefix(ev.Reason, "evicted for "); ok {
			if _, started := m.swapStart[forModel]; !started {
				m.swapStart[forModel] = ev.Time
			}
		}
	case scheduler.EvReleaseTimeout:
		m.releaseTimeouts.WithLabelValues(ev.Model).Inc()
	}
}

func (m *Metrics) jobFinished(ev scheduler.Event) {
	m.finished.WithLabelValues(ev.Model, ev.State).Inc()
	if t, ok := m.startedAt.get(ev.JobID); ok {
		m.run.WithLabelValues(ev.Model, ev.State).Observe(nonNegative(ev.Time.Sub(t)))
		m.startedAt.delete(ev.JobID)
	}
	m.queuedAt.delete(ev.JobID)
	if ev.State == string(store.JobStateQueued) { // requeued: its next wait starts now
		m.queuedAt.set(ev.JobID, ev.Time)
	}
}

// queuedSince is when the job was queued: from its event, else (a job
// recovered at start-up) from the store.
func (m *Metrics) queuedSince(id string) (time.Time, bool) {
	if t, ok := m.queuedAt.get(id); ok {
		return t, true
	}
	j, err := m.store.Get(id)
	if err != nil || j.CreatedAt.IsZero() {
		return time.Time{}, false
	}
	return j.CreatedAt, true
}

func nonNegative(d time.Duration) float64 { return max(d.Seconds(), 0) }

// timeMap remembers a time per job ID, bounded: past max entries the older
// half is forgotten (those jobs then get no wait or run observation).
type timeMap struct {
	max int
	m   map[string]time.Time
}

func newTimeMap(n int) *timeMap { return &timeMap{max: n, m: map[string]time.Time{}} }

func (t *timeMap) get(id string) (time.Time, bool) {
	v, ok := t.m[id]
	return v, ok
}

func (t *timeMap) delete(id string) { delete(t.m, id) }

func (t *timeMap) set(id string, at time.Time) {
	if _, ok := t.m[id]; !ok && len(t.m) >= t.max {
		t.prune()
	}
	t.m[id] = at
}

// prune drops the entries older than the median time.
func (t *timeMap) prune() {
	times := make([]time.Time, 0, len(t.m))
	for _, v := range t.m {
		times = append(times, v)
	}
	cut := medianTime(times)
	for id, v := range t.m {
		if !v.After(cut) {
			delete(t.m, id)
		}
	}
}

func medianTime(ts []time.Time) time.Time {
	if len(ts) == 0 {
		return time.Time{}
	}
	slices.SortFunc(ts, time.Time.Compare)
	return ts[len(ts)/2]
}
