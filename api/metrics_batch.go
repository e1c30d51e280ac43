package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramcram/vramcram/api/batch"
	"github.com/vramcram/vramcram/store"
)

var (
	descBatches    = desc("vramcram_batches", "OpenAI batches by status.", "status")
	descBatchLines = desc("vramcram_batch_lines",
		"Lines of unfinished OpenAI batches by state: pending (not yet a job), queued, running, completed, failed, cancelled.", "state")
)

// batchCollector reads the batch manager's summary on every scrape.
type batchCollector struct{ b Batches }

func (c batchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBatches
	ch <- descBatchLines
}

func (c batchCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	for _, s := range store.BatchStatuses() {
		gauge(ch, descBatches, float64(st.Batches[s]), string(s))
	}
	for _, s := range append([]store.JobState{batch.LinePending}, store.JobStates()...) {
		gauge(ch, descBatchLines, float64(st.Lines[s]), string(s))
	}
}

// RegisterBatches adds the batch gauges, read from b at scrape time.
func (m *Metrics) RegisterBatches(b Batches) {
	m.reg.MustRegister(batchCollector{b: b})
}
