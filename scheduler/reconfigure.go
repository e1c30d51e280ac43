package scheduler

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Events of a configuration reload, published by the daemon's reloader.
const (
	EvConfigReloaded = "config_reloaded" // reason: what changed
	EvConfigRejected = "config_rejected" // error: why the new config was not applied
)

// Reconfig is a new model set and the scheduling settings that apply live.
type Reconfig struct {
	// Models is the new model set, in config order (as Config.Models).
	Models []Model
	// Restart names the models whose engine options changed: a running
	// instance drains (its running work finishes) and stops; the next job
	// starts it with the new options.
	Restart []string
	// Settings carries the live keys: Policy, MaxWait, MaxAttempts, Aging,
	// ShutdownGrace, MeterInterval, ReleaseTimeout, ReleasePoll and
	// SafetyMarginMB. Its Models, Devices and TotalMB are ignored (devices
	// change only with a restart).
	Settings Config
}

// ReconfigResult says what a Reconfigure did.
type ReconfigResult struct {
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Restarted []string `json:"restarted"` // changed models: drained now, or restarted on next use
}

// Reconfigure applies rc in the loop: new models appear at once; removed
// models fail their queued jobs and waiting requests with the reason, drain
// and stop (their running work finishes); changed models drain and start
// with their new options on next use; the live settings take effect for
// the next decision. Nothing is applied when rc is invalid (a model's GPU
// that is not a device, an unknown policy, a non-positive budget).
func (s *Scheduler) Reconfigure(ctx context.Context, rc Reconfig) (ReconfigResult, error) {
	type res struct {
		r   ReconfigResult
		err error
	}
	v, err := ask(ctx, s, func(reply chan res) any {
		return reconfigReq{rc: rc, reply: func(r ReconfigResult, err error) { reply <- res{r, err} }}
	})
	if err != nil {
		return ReconfigResult{}, err
	}
	return v.r, v.err
}

type reconfigReq struct {
	rc    Reconfig
	reply func(ReconfigResult, error)
}

// validateReconfig checks rc against the devices the loop has.
func (s *Scheduler) validateReconfig(rc Reconfig) error {
	p := rc.Settings.Policy
	if p != PolicyBatch && p != PolicyFIFO {
		return fmt.Errorf("unknown policy %q", p)
	}
	for k, d := range s.st.devs {
		if d.TotalMB-rc.Settings.SafetyMarginMB <= 0 {
			return fmt.Errorf("device %d: budget %d−%d MiB is not positive", k, d.TotalMB, rc.Settings.SafetyMarginMB)
		}
	}
	seen := map[string]bool{}
	for _, m := range rc.Models {
		if seen[m.Name] {
			return fmt.Errorf("model %s is listed twice", m.Name)
		}
		seen[m.Name] = true
		for _, g := range m.GPUs {
			if g < 0 || g >= len(s.st.devs) {
				return fmt.Errorf("model %s: GPU %d is not one of the %d devices", m.Name, g, len(s.st.devs))
			}
		}
	}
	return nil
}

// reconfigure applies rc for the loop.
func (s *Scheduler) reconfigure(rc Reconfig) (ReconfigResult, error) {
	var res ReconfigResult
	if err := s.validateReconfig(rc); err != nil {
		return res, fmt.Errorf("reconfigure: %w", err)
	}
	st := s.st
	wanted := map[string]bool{}
	for _, m := range rc.Models {
		wanted[m.Name] = true
	}
	for _, name := range st.order {
		if m := st.models[name]; !wanted[name] && !m.removed {
			s.removeModel(m)
			res.Removed = append(res.Removed, name)
		}
	}
	order := make([]string, 0, len(rc.Models))
	for _, nm := range rc.Models {
		if nm.Slots <= 0 {
			nm.Slots = 1
		}
		order = append(order, nm.Name)
		m := st.models[nm.Name]
		switch {
		case m == nil:
			st.models[nm.Name] = &modelState{Model: nm, wantLoaded: nm.Preload}
			res.Added = append(res.Added, nm.Name)
			s.log.Info("model added", "model", nm.Name)
		case m.removed || slices.Contains(rc.Restart, nm.Name):
			if m.removed {
				res.Added = append(res.Added, nm.Name)
			} else {
				res.Restarted = append(res.Restarted, nm.Name)
			}
			m.removed = false
			m.Model = nm
			m.unavailable, m.lastErr, m.loadFailures, m.crashes, m.backoffUntil = "", "", 0, 0, time.Time{}
			s.restartInstance(m, "config changed")
		default: // only the keys that apply live
			m.Pinned, m.TTL = nm.Pinned, nm.TTL
			if nm.Preload && !m.Preload && m.inst == nil {
				m.wantLoaded = true
			}
			m.Preload = nm.Preload
		}
	}
	for _, name := range st.order { // removed models stay listed until their engine is gone
		if st.models[name].removed {
			order = append(order, name)
		}
	}
	st.order = order
	s.applySettings(rc.Settings)
	s.checkAvailability()
	return res, nil
}

// applySettings takes the live scheduling keys.
func (s *Scheduler) applySettings(c Config) {
	s.cfg.Policy, s.cfg.MaxWait, s.cfg.Aging = c.Policy, c.MaxWait, c.Aging
	if c.MaxAttempts > 0 {
		s.cfg.MaxAttempts = c.MaxAttempts
	}
	s.cfg.ShutdownGrace, s.cfg.SafetyMarginMB = c.ShutdownGrace, c.SafetyMarginMB
	if c.MeterInterval > 0 {
		s.cfg.MeterInterval = c.MeterInterval
	}
	if c.ReleaseTimeout > 0 {
		s.cfg.ReleaseTimeout = c.ReleaseTimeout
	}
	if c.ReleasePoll > 0 {
		s.cfg.ReleasePoll = c.ReleasePoll
	}
}

// removeModel takes m out of service: waiting requests and queued jobs
// fail with the reason; its instance drains and stops; the loop forgets m
// once its instance is gone (dropRemoved).
func (s *Scheduler) removeModel(m *modelState) {
	reason := "model " + m.Name + " was removed from the config"
	s.log.Info("model removed", "model", m.Name)
	m.removed, m.wantLoaded = true, false
	s.failWaiters(m, fmt.Errorf("%w %q: removed from the config", ErrUnknownModel, m.Name))
	m.failing = false // a failQueued still running counts anyway
	s.failQueued(m, reason)
	s.restartInstance(m, "removed from the config")
}

// restartInstance drains m's instance (a loading one stops at once) so the
// next use starts it afresh.
func (s *Scheduler) restartInstance(m *modelState, reason string) {
	i := m.inst
	if i == nil {
		return
	}
	switch i.state {
	case InstLoading:
		s.stopInstance(i, reason)
	case InstReady:
		i.state = InstDraining
		i.stopReason = reason
		s.log.Info("draining model", "model", m.Name, "reason", reason)
	}
}

// dropRemoved forgets removed models whose instance is gone and whose
// queued jobs have been failed.
func (s *Scheduler) dropRemoved() {
	st := s.st
	keep := st.order[:0]
	for _, name := range st.order {
		if m := st.models[name]; m.removed && m.inst == nil && !m.failing {
			delete(st.models, name)
			continue
		}
		keep = append(keep, name)
	}
	st.order = keep
}
