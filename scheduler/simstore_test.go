package scheduler

import (
	"fmt"
	"slices"
	"time"

	"github.com/vramcram/vramcram/store"
)

// simStore is an in-memory JobStore with the store package's semantics
// (claim order, attempts, compare-and-set transitions), deterministic and
// fast enough for hundreds of simulated runs.
type simStore struct {
	now   func() time.Time
	aging time.Duration
	jobs  map[string]*store.Job
	ids   []string // arrival order
	seq   uint64
}

func newSimStore(now func() time.Time) *simStore {
	return &simStore{now: now, jobs: map[string]*store.Job{}}
}

func (s *simStore) enqueue(model string, prio, maxAttempts int) *store.Job {
	s.seq++
	j := &store.Job{ID: fmt.Sprintf("job-%05d", s.seq), Model: model, Type: "llm", Priority: prio,
		State: store.JobStateQueued, MaxAttempts: maxAttempts, Seq: s.seq, CreatedAt: s.now()}
	s.jobs[j.ID] = j
	s.ids = append(s.ids, j.ID)
	return j
}

func (s *simStore) eff(j *store.Job) int {
	return store.EffectivePriority(j.Priority, j.CreatedAt, s.now(), s.aging)
}

// head is the next job Claim would take for model.
func (s *simStore) head(model string) *store.Job {
	var best *store.Job
	for _, id := range s.ids {
		j := s.jobs[id]
		if j.Model != model || j.State != store.JobStateQueued {
			continue
		}
		if best == nil || s.eff(j) > s.eff(best) {
			best = j
		}
	}
	return best
}

func (s *simStore) Claim(model string) (store.Job, error) {
	j := s.head(model)
	if j == nil {
		return store.Job{}, store.ErrEmpty
	}
	j.State, j.StartedAt = store.JobStateRunning, s.now()
	j.Attempts++
	return *j, nil
}

// cas moves job id from one of from to the state set by f.
func (s *simStore) cas(id string, from []store.JobState, f func(*store.Job)) error {
	j, ok := s.jobs[id]
	if !ok {
		return store.ErrNotFound
	}
	if !slices.Contains(from, j.State) {
		return fmt.Errorf("%s is %s: %w", id, j.State, store.ErrStateConflict)
	}
	f(j)
	if j.State.Final() {
		j.FinishedAt = s.now()
	}
	return nil
}

func (s *simStore) Complete(id string, result []byte) error {
	return s.cas(id, []store.JobState{store.JobStateRunning}, func(j *store.Job) { j.State = store.JobStateCompleted })
}

func (s *simStore) Requeue(id, reason string) (store.JobState, error) {
	var next store.JobState
	err := s.cas(id, []store.JobState{store.JobStateRunning}, func(j *store.Job) {
		j.Error = reason
		j.State = store.JobStateFailed
		if j.Attempts < j.MaxAttempts {
			j.State = store.JobStateQueued
		}
		next = j.State
	})
	return next, err
}

func (s *simStore) Release(id string) error {
	return s.cas(id, []store.JobState{store.JobStateRunning}, func(j *store.Job) {
		j.State = store.JobStateQueued
		j.Attempts = max(j.Attempts-1, 0)
	})
}

func (s *simStore) Fail(id, reason string) error {
	return s.cas(id, []store.JobState{store.JobStateQueued, store.JobStateRunning}, func(j *store.Job) {
		j.State, j.Error = store.JobStateFailed, reason
	})
}

func (s *simStore) cancel(id string) error {
	return s.cas(id, []store.JobState{store.JobStateQueued, store.JobStateRunning}, func(j *store.Job) {
		j.State = store.JobStateCancelled
	})
}

func (s *simStore) Depths() (map[string]int, error) {
	out := map[string]int{}
	for _, j := range s.jobs {
		if j.State == store.JobStateQueued {
			out[j.Model]++
		}
	}
	return out, nil
}

func (s *simStore) Heads() (map[string]store.Job, error) {
	out := map[string]store.Job{}
	for _, id := range s.ids {
		j := s.jobs[id]
		if _, seen := out[j.Model]; seen || j.State != store.JobStateQueued {
			continue
		}
		out[j.Model] = *s.head(j.Model)
	}
	return out, nil
}

func (s *simStore) List(f store.ListFilter) ([]store.Job, error) {
	var out []store.Job
	for _, id := range s.ids {
		j := s.jobs[id]
		if (f.Model == "" || j.Model == f.Model) && (f.State == "" || j.State == f.State) {
			out = append(out, *j)
		}
	}
	return out, nil
}
