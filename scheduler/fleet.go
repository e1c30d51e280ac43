package scheduler

import "time"

// Fleet is what the scheduler asks of the other nodes that share its queue
// (storage.backend: redis). Its methods are called from the loop: they
// must answer from memory or within a short, bounded wait.
type Fleet interface {
	// MayLoad reports whether this node should load model for queued work
	// whose oldest job has waited waited: false while another live node
	// holds (or is loading) the model and the wait is under max_wait, so
	// that two nodes do not both load a model that one can serve.
	MayLoad(model string, waited time.Duration) bool
	// FitsElsewhere reports whether another live node can hold model, so
	// that this node neither refuses nor fails work that is too large for
	// its own GPUs: the work moves to where it fits.
	FitsElsewhere(model string) bool
}

// deferLoad reports whether the fleet serves m's queued work elsewhere, so
// this node should not load it now. Interactive waiters and load wishes
// made on this node are never deferred.
func (s *Scheduler) deferLoad(m *modelState, h headInfo) bool {
	if s.cfg.Fleet == nil || m.wantLoaded || len(m.waiters) > 0 {
		return false
	}
	waited := time.Duration(0)
	if h.ok {
		waited = s.now().Sub(h.since)
	}
	return !s.cfg.Fleet.MayLoad(m.Name, waited)
}

// fitsInFleet reports whether another node can hold m.
func (s *Scheduler) fitsInFleet(m *modelState) bool {
	return s.cfg.Fleet != nil && s.cfg.Fleet.FitsElsewhere(m.Name)
}
