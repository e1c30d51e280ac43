package scheduler

import (
	"slices"

	"github.com/vramcram/vramcram/vram"
)

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

// learn folds the devices' readings into the ledger: what the driver
// reports for an engine's process on each of its devices replaces the
// estimate there. While loading a share is the larger of the two (the
// engine is still allocating); once ready it is the peak measured since the
// start. A new peak of a ready instance is persisted for the next load.
func (s *Scheduler) learn() {
	for _, i := range s.st.instances() {
		if i.eng == nil || i.eng.PID() <= 0 || i.state == InstStopping {
			continue
		}
		if len(i.peak) != len(i.place) {
			i.peak = make([]int, len(i.place))
		}
		measured, seen := 0, false
		for k, p := range i.place {
			r := s.st.devs[p.Device].reading
			if r.Source != vram.SourceNVML {
				continue
			}
			if mb, listed := r.Held(i.eng.PID()); listed && mb > 0 {
				measured += mb
				i.peak[k] = max(i.peak[k], mb)
				seen = true
			}
		}
		if !seen {
			continue
		}
		i.measuredMB = measured
		place := make([]Placement, len(i.place))
		copy(place, i.place)
		for k := range place {
			if i.peak[k] == 0 {
				continue // nothing measured there yet: keep the share
			}
			if i.state == InstLoading {
				place[k].MB = max(i.estimate[k].MB, i.peak[k])
			} else {
				place[k].MB = i.peak[k]
			}
		}
		i.setShares(place)
		if i.state != InstLoading && !slices.Contains(i.peak, 0) {
			s.persistLearned(i.model, i.reservedMB) // every device measured
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
