package scheduler

import "github.com/vramcram/vramcram/vram"

// LearnedStore is the optional part of the JobStore that keeps the VRAM
// measured per model across restarts. The store's key is Model.LearnKey.
type LearnedStore interface {
	SetLearnedVRAM(key string, mb int) error
}

// learnKey is the key under which m's measured VRAM is kept.
func learnKey(m Model) string {
	if m.LearnKey != "" {
		return m.LearnKey
	}
	return m.Name
}

// learn folds a meter reading into the ledger: what the driver reports for
// an engine's process replaces its model's estimate. While loading the
// reservation is the larger of the two (the engine is still allocating);
// once ready it is the peak measured since the start. A new peak of a ready
// instance is persisted for the next load.
func (s *Scheduler) learn(r vram.Reading) {
	if r.Source != vram.SourceNVML {
		return
	}
	for _, i := range s.st.instances() {
		if i.eng == nil || i.eng.PID() <= 0 || i.state == InstStopping {
			continue
		}
		mb, listed := r.Held(i.eng.PID())
		if !listed || mb <= 0 {
			continue
		}
		i.measuredMB = mb
		i.peakMB = max(i.peakMB, mb)
		switch i.state {
		case InstLoading:
			i.reservedMB = max(i.estimateMB, i.peakMB)
		case InstReady, InstDraining:
			i.reservedMB = i.peakMB
			s.persistLearned(i.model, i.peakMB)
		}
	}
}

// persistLearned records mb as m's learned figure when it is a new peak.
func (s *Scheduler) persistLearned(m *modelState, mb int) {
	if mb <= m.LearnedMB {
		return
	}
	s.log.Info("learned VRAM of model", "model", m.Name, "vram_measured_mb", mb, "previous_mb", m.LearnedMB)
	m.LearnedMB = mb
	s.fx.persistLearned(m.Name, learnKey(m.Model), mb)
}
