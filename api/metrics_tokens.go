package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramcram/vramcram/scheduler"
)

// tokenBuckets are generation speeds, in tokens per second.
var tokenBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}

// tokenMetrics count the tokens engines report for finished jobs and
// interactive requests (job_finished events carrying prompt and completion
// tokens).
type tokenMetrics struct {
	prompt, generated *prometheus.CounterVec
	speed             *prometheus.HistogramVec
}

func newTokenMetrics(models []string) tokenMetrics {
	t := tokenMetrics{
		prompt:    counterVec("vramcram_prompt_tokens_total", "Prompt tokens of finished LLM jobs and interactive requests, as the engine reported them.", "model"),
		generated: counterVec("vramcram_generated_tokens_total", "Tokens generated for finished LLM jobs and interactive requests, as the engine reported them.", "model"),
		speed: histogramVec("vramcram_generation_tokens_per_second",
			"Generation speed per finished request: the engine's own figure (llama-server timings.predicted_per_second), else generated tokens over the request's time.",
			tokenBuckets, "model"),
	}
	for _, name := range models {
		t.prompt.WithLabelValues(name)
		t.generated.WithLabelValues(name)
	}
	return t
}

func (t tokenMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.prompt, t.generated, t.speed}
}

// apply counts the tokens of one job_finished event.
func (t tokenMetrics) apply(ev scheduler.Event) {
	if ev.PromptTokens > 0 {
		t.prompt.WithLabelValues(ev.Model).Add(float64(ev.PromptTokens))
	}
	if ev.CompletionTokens > 0 {
		t.generated.WithLabelValues(ev.Model).Add(float64(ev.CompletionTokens))
	}
	if ev.TokensPerSecond > 0 {
		t.speed.WithLabelValues(ev.Model).Observe(ev.TokensPerSecond)
	}
}
