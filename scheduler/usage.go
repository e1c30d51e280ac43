package scheduler

import (
	"time"

	"github.com/vramcram/vramcram/engine"
)

// Usage is what a job or an interactive request cost in tokens; see
// engine.Usage.
type Usage = engine.Usage

// tokenStats is one model's token figures since the daemon started. Owned
// by the loop.
type tokenStats struct {
	prompt, generated int64
	// tps is a moving average of the generation speed of recent requests
	// (tokens/s); 0 until one reported its tokens.
	tps float64
}

// SetUsage records the tokens the request on this lease cost (the API reads
// them off the engine's answer). Call it before Finish.
func (l *Lease) SetUsage(u Usage) { l.usage, l.usageSet = u, true }

// recordUsage folds one finished request's tokens into m's figures and onto
// its job_finished event. ran is the request's wall time, the fallback
// speed when the engine gave none (it includes prompt processing, so it is
// lower than the engine's own figure).
func (s *Scheduler) recordUsage(m *modelState, u Usage, ran time.Duration, e *Event) {
	if u.PromptTokens <= 0 && u.CompletionTokens <= 0 {
		return
	}
	tps := u.TokensPerSecond
	if tps <= 0 && u.CompletionTokens > 0 && ran > 0 {
		tps = float64(u.CompletionTokens) / ran.Seconds()
	}
	m.tokens.prompt += int64(max(u.PromptTokens, 0))
	m.tokens.generated += int64(max(u.CompletionTokens, 0))
	if tps > 0 && u.CompletionTokens > 0 {
		m.tokens.tps = ewma(m.tokens.tps, tps)
	}
	e.PromptTokens, e.CompletionTokens, e.TokensPerSecond = u.PromptTokens, u.CompletionTokens, roundMs(tps)
}
