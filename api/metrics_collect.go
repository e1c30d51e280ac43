package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramcram/vramcram/scheduler"
)

const mib = 1 << 20

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Gauges read at scrape time.
var (
	descSchedulerUp   = desc("vramcram_scheduler_up", "1 if the scheduler loop answered this scrape, else 0.")
	descBuildInfo     = desc("vramcram_build_info", "Always 1; the version in a label.", "version")
	descEventsDropped = desc("vramcram_metrics_events_dropped_total",
		"Bus events the metrics missed because their buffer was full; counters lag by that much.")
	descVRAMSource = desc("vramcram_vram_source_info", "Always 1; where VRAM readings come from (nvml or config).", "source")
	descVRAMTotal  = desc("vramcram_vram_total_bytes", "GPU memory: NVML total, or vram.total_mb.")
	descVRAMBudget = desc("vramcram_vram_budget_bytes", "Memory the ledger may reserve: total minus vram.safety_margin_mb.")
	descVRAMResv   = desc("vramcram_vram_reserved_bytes", "Reserved by VramCram's engines (loading, loaded, stopping).")
	descVRAMNotOur = desc("vramcram_vram_not_ours_bytes", "Used by processes that are not VramCram's engines (NVML only).")
	descVRAMFree   = desc("vramcram_vram_free_bytes", "Budget left: budget minus reserved minus not ours.")
	descQueueDepth = desc("vramcram_queue_depth", "Jobs waiting, by model and priority.", "model", "priority")
	descRunning    = desc("vramcram_jobs_running", "Jobs running now.", "model")
	descState      = desc("vramcram_model_state", "1 for the model's current state, 0 for the others.", "model", "state")
	descSlots      = desc("vramcram_model_slots", "Jobs a loaded instance runs at once (config.parallel).", "model")
	descModelResv  = desc("vramcram_model_vram_reserved_bytes", "The model's reservation in the ledger (0 when not loaded).", "model")
	descModelConf  = desc("vramcram_model_vram_configured_bytes", "vram_mb from the config (0 when not set).", "model")
	descModelEst   = desc("vramcram_model_vram_estimate_bytes", "Estimate from the model file (0 when none).", "model")
	descLastUsed   = desc("vramcram_model_last_used_timestamp_seconds", "When the model last finished a job or loaded.", "model")
	descModelMeas  = desc("vramcram_model_vram_measured_bytes", "What NVML reports for the model's engine process now (0 when not loaded or without NVML).", "model")
	descModelLearn = desc("vramcram_model_vram_learned_bytes", "Peak measured on earlier loads; the next load reserves it.", "model")
	descEstErr     = desc("vramcram_model_vram_estimate_error_bytes", "Measured minus the figure the load started from (configured or estimated); positive: it was too low.", "model")
	descDevTotal   = desc("vramcram_gpu_vram_total_bytes", "One GPU's memory.", "gpu")
	descDevBudget  = desc("vramcram_gpu_vram_budget_bytes", "One GPU's budget: total minus vram.safety_margin_mb (0 while lost).", "gpu")
	descDevResv    = desc("vramcram_gpu_vram_reserved_bytes", "Reserved on one GPU by VramCram's engines.", "gpu")
	descDevNotOurs = desc("vramcram_gpu_vram_not_ours_bytes", "Used on one GPU by processes that are not VramCram's.", "gpu")
	descDevFree    = desc("vramcram_gpu_vram_free_bytes", "One GPU's budget left.", "gpu")
	descDevLost    = desc("vramcram_gpu_lost", "1 while the GPU's readings fail and nothing is placed on it.", "gpu")
)

var modelStates = []string{
	scheduler.ModelUnloaded, scheduler.ModelLoading, scheduler.ModelReady, scheduler.ModelBusy,
	scheduler.ModelDraining, scheduler.ModelStopping, scheduler.ModelFailed, scheduler.ModelUnavailable,
}

// snapshotCollector reads the scheduler's Snapshot and the store's queue
// depths on every scrape.
type snapshotCollector struct{ m *Metrics }

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descSchedulerUp, descBuildInfo, descEventsDropped, descVRAMSource, descVRAMTotal, descVRAMBudget,
		descVRAMResv, descVRAMNotOur, descVRAMFree, descQueueDepth, descRunning, descState, descSlots,
		descModelResv, descModelConf, descModelEst, descLastUsed, descModelMeas, descModelLearn, descEstErr,
		descDevTotal, descDevBudget, descDevResv, descDevNotOurs, descDevFree, descDevLost,
	} {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge(ch, descBuildInfo, 1, m.cfg.Version)
	ch <- prometheus.MustNewConstMetric(descEventsDropped, prometheus.CounterValue, float64(m.sub.Dropped()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	snap, err := m.sched.Snapshot(ctx)
	if err != nil {
		m.log.Warn("metrics scrape: scheduler snapshot", "err", err)
		gauge(ch, descSchedulerUp, 0)
		return
	}
	gauge(ch, descSchedulerUp, 1)
	gauge(ch, descVRAMSource, 1, snap.VRAMSource)
	gauge(ch, descVRAMTotal, float64(snap.TotalMB)*mib)
	gauge(ch, descVRAMBudget, float64(snap.BudgetMB)*mib)
	gauge(ch, descVRAMResv, float64(snap.ReservedMB)*mib)
	gauge(ch, descVRAMNotOur, float64(snap.NotOursMB)*mib)
	gauge(ch, descVRAMFree, float64(snap.FreeMB)*mib)
	for _, d := range snap.Devices {
		gpu := strconv.Itoa(d.Index)
		gauge(ch, descDevTotal, float64(d.TotalMB)*mib, gpu)
		gauge(ch, descDevBudget, float64(d.BudgetMB)*mib, gpu)
		gauge(ch, descDevResv, float64(d.ReservedMB)*mib, gpu)
		gauge(ch, descDevNotOurs, float64(d.NotOursMB)*mib, gpu)
		gauge(ch, descDevFree, float64(d.FreeMB)*mib, gpu)
		lost := 0.0
		if d.Lost != "" {
			lost = 1
		}
		gauge(ch, descDevLost, lost, gpu)
	}
	for _, ms := range snap.Models {
		c.collectModel(ch, ms)
	}
	c.collectDepths(ch, snap.Models)
}

func (c *snapshotCollector) collectModel(ch chan<- prometheus.Metric, ms scheduler.ModelStatus) {
	for _, st := range modelStates {
		v := 0.0
		if ms.State == st {
			v = 1
		}
		gauge(ch, descState, v, ms.Name, st)
	}
	gauge(ch, descRunning, float64(ms.Running), ms.Name)
	gauge(ch, descSlots, float64(ms.Slots), ms.Name)
	gauge(ch, descModelResv, float64(ms.ReservedMB)*mib, ms.Name)
	gauge(ch, descModelConf, float64(ms.VRAMMB)*mib, ms.Name)
	gauge(ch, descModelEst, float64(ms.EstimateMB)*mib, ms.Name)
	gauge(ch, descModelMeas, float64(ms.MeasuredMB)*mib, ms.Name)
	gauge(ch, descModelLearn, float64(ms.LearnedMB)*mib, ms.Name)
	if ms.MeasuredMB > 0 {
		base := ms.VRAMMB
		if base == 0 {
			base = ms.EstimateMB
		}
		if base > 0 {
			gauge(ch, descEstErr, float64(ms.MeasuredMB-base)*mib, ms.Name)
		}
	}
	if ms.LastUsed != nil {
		gauge(ch, descLastUsed, float64(ms.LastUsed.UnixNano())/1e9, ms.Name)
	}
}

// collectDepths reports the store's queue per model and priority; a
// configured model with nothing queued shows priority 0 at 0.
func (c *snapshotCollector) collectDepths(ch chan<- prometheus.Metric, models []scheduler.ModelStatus) {
	depths, err := c.m.store.QueueDepths()
	if err != nil {
		c.m.log.Warn("metrics scrape: queue depths", "err", err)
		return
	}
	for _, ms := range models {
		if len(depths[ms.Name]) == 0 {
			gauge(ch, descQueueDepth, 0, ms.Name, "0")
		}
	}
	for model, byPrio := range depths {
		for prio, n := range byPrio {
			gauge(ch, descQueueDepth, float64(n), model, strconv.Itoa(prio))
		}
	}
}

// Middleware counts the requests of e's routes by method, route template
// (/jobs/:id, not the job ID) and status code. Install it first so that it
// sees the status of errors (it hands them to echo's error handler itself)
// and of 401s.
func (m *Metrics) Middleware(e *echo.Echo) echo.MiddlewareFunc {
	// e's routes, read once, after they are all registered: a 404 whose
	// path is none of them matched no route (echo then reports the request
	// path, or a catch-all, as the route).
	routes := sync.OnceValue(func() map[string]bool {
		set := map[string]bool{}
		for _, r := range e.Routes() {
			set[r.Method+" "+r.Path] = true
		}
		return set
	})
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" || c.Response().Status == http.StatusNotFound && !routes()[c.Request().Method+" "+route] {
				route = "unmatched"
			}
			m.httpRequests.WithLabelValues(methodLabel(c.Request().Method), route, strconv.Itoa(c.Response().Status)).Inc()
			return nil
		}
	}
}

// methodLabel keeps the label's values bounded: clients may send any method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
