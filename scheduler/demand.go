package scheduler

import (
	"math"
	"time"
)

// demandTau is the time constant of a model's demand: an arrival counts
// 1 when it comes and 1/e of that demandTau later.
const demandTau = 20 * time.Second

// demand is a model's recent arrivals, decayed with time: how soon more
// work for it is likely, judged from the past only.
type demand struct {
	value float64
	at    time.Time
}

// now is the demand decayed to now.
func (d demand) now(now time.Time) float64 {
	if d.value == 0 {
		return 0
	}
	return d.value * math.Exp(-now.Sub(d.at).Seconds()/demandTau.Seconds())
}

// add records one arrival at now.
func (d *demand) add(now time.Time) {
	d.value, d.at = d.now(now)+1, now
}

// backlogFull reports whether m's queued work would keep all its slots
// busy for at least one load time. A model without figures of its own
// goes by the others' (prior); with none at all, it is full.
func (m *modelState) backlogFull(prior figures) bool {
	run, load := m.avgRun, m.avgLoad
	if run == 0 {
		run = prior.run
	}
	if load == 0 {
		load = prior.load
	}
	if run == 0 || load == 0 {
		return true
	}
	return float64(m.waiting())*run >= float64(max(m.Slots, 1))*load
}

// figures are mean job and load seconds.
type figures struct{ run, load float64 }

// meanFigures averages the models' job and load times, over those that
// have them.
func (st *state) meanFigures() figures {
	var f figures
	var nr, nl int
	for _, m := range st.models {
		if m.avgRun > 0 {
			f.run += m.avgRun
			nr++
		}
		if m.avgLoad > 0 {
			f.load += m.avgLoad
			nl++
		}
	}
	if nr > 0 {
		f.run /= float64(nr)
	}
	if nl > 0 {
		f.load /= float64(nl)
	}
	return f
}

// swapTime is how long a load of m would hold the memory it takes before
// another model could have it: its load time and its backlog's run over
// its slots, by its own figures or the others' (prior).
func (m *modelState) swapTime(prior figures) time.Duration {
	run, load := m.avgRun, m.avgLoad
	if run == 0 {
		run = prior.run
	}
	if load == 0 {
		load = prior.load
	}
	batches := (m.waiting() + max(m.Slots, 1) - 1) / max(m.Slots, 1)
	return time.Duration((load + float64(batches)*run) * float64(time.Second))
}
