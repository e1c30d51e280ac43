package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// Enqueue adds j to its model's queue. The caller sets j.ID (checked with
// ValidID), Model, Type, Prompt, Params and Priority (clamped to
// [MinPriority, MaxPriority]); Enqueue sets State=queued, Seq, Attempts=0,
// CreatedAt (if zero; stored in UTC), MaxAttempts (DefaultMaxAttempts if 0),
// clears Error, StartedAt and FinishedAt, and on success copies the stored job
// back into *j. When it returns nil the job is committed (fsync'd unless
// Options.NoSync).
//
// ctx bounds the wait for the committer to accept the job; once accepted,
// Enqueue waits for the commit (a few ms) and reports its outcome.
//
// Returns ErrInvalid (bad ID, model, params, max attempts), ErrStateConflict
// (the ID exists), ErrQueueFull, ErrClosed or ctx's error.
func (s *Store) Enqueue(ctx context.Context, j *Job) error {
	rec := *j
	switch {
	case !ValidID(rec.ID):
		return fmt.Errorf("enqueue: %w: id %q", ErrInvalid, rec.ID)
	case !validModel(rec.Model):
		return fmt.Errorf("enqueue %s: %w: model %q", rec.ID, ErrInvalid, rec.Model)
	case rec.MaxAttempts < 0:
		return fmt.Errorf("enqueue %s: %w: max attempts %d", rec.ID, ErrInvalid, rec.MaxAttempts)
	case len(rec.Params) > 0 && !json.Valid(rec.Params):
		return fmt.Errorf("enqueue %s: %w: params are not valid JSON", rec.ID, ErrInvalid)
	}
	rec.Priority = clampPriority(rec.Priority)
	rec.State = JobStateQueued
	rec.Attempts = 0
	if rec.MaxAttempts == 0 {
		rec.MaxAttempts = DefaultMaxAttempts
	}
	rec.Error = ""
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.now()
	} else {
		rec.CreatedAt = rec.CreatedAt.UTC()
	}
	rec.StartedAt, rec.FinishedAt = time.Time{}, time.Time{}

	// The committer alone touches rec until write returns. apply sets
	// rec.Seq afresh each time it runs (again after a rollback), so rec is
	// the stored record once the commit succeeds.
	err := s.write(ctx, func(t *txn) (func() error, error) {
		if t.jobs.Get([]byte(rec.ID)) != nil {
			return nil, fmt.Errorf("%w: job exists", ErrStateConflict)
		}
		if s.maxQueued > 0 && t.queuedCount() >= s.maxQueued {
			return nil, fmt.Errorf("%w: %d jobs queued", ErrQueueFull, t.queuedCount())
		}
		return func() error {
			seq, err := t.jobs.NextSequence()
			if err != nil {
				return err
			}
			rec.Seq = seq
			if err := t.order.Put(seqKey(seq), []byte(rec.ID)); err != nil {
				return err
			}
			if err := t.pushQueue(&rec); err != nil {
				return err
			}
			return t.putJob(&rec)
		}, nil
	})
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", rec.ID, classify(err))
	}
	*j = rec
	return nil
}

// Claim moves the head of model's queue (highest priority, aged by
// Options.Aging, then lowest Seq) to running, counts the attempt (Attempts++) and sets StartedAt. Returns the
// claimed job, or ErrEmpty if the model has no queued job.
func (s *Store) Claim(model string) (Job, error) {
	var claimed Job
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		qb := t.queues.Bucket([]byte(model))
		if qb == nil || model == "" {
			return nil, ErrEmpty
		}
		j, ok, err := s.head(t, qb)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, ErrEmpty
		}
		if j.State != JobStateQueued {
			return nil, fmt.Errorf("head %s: %w: in queue but %s", j.ID, ErrCorrupt, j.State)
		}
		return func() error {
			j.State = JobStateRunning
			j.Attempts++
			j.StartedAt = s.now()
			if err := t.transition(&j, JobStateQueued); err != nil {
				return err
			}
			claimed = j
			return nil
		}, nil
	})
	if err != nil {
		return Job{}, fmt.Errorf("claim %s: %w", model, classify(err))
	}
	return claimed, nil
}

// cas is the compare-and-set behind every transition of one job: if the job's
// state is one of from, apply changes *j (its State included) and the record
// and indexes are written in the same transaction. It returns the state the
// job had (also on ErrStateConflict). Returns ErrNotFound, ErrStateConflict.
func (s *Store) cas(id string, from []JobState, apply func(t *txn, j *Job) error) (JobState, error) {
	if !ValidID(id) {
		return "", ErrNotFound
	}
	var prev JobState
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		j, err := t.job(id)
		if err != nil {
			return nil, err
		}
		prev = j.State
		if !slices.Contains(from, j.State) {
			return nil, fmt.Errorf("%w: job is %s", ErrStateConflict, j.State)
		}
		return func() error {
			if err := apply(t, &j); err != nil {
				return err
			}
			return t.transition(&j, prev)
		}, nil
	})
	return prev, classify(err)
}

// Complete moves a running job to completed, stores result (read with Result)
// and sets FinishedAt; it clears Error left by an earlier attempt. Returns
// ErrStateConflict if the job is not running (say it was cancelled
// meanwhile: the result is then dropped), ErrNotFound.
func (s *Store) Complete(id string, result []byte) error {
	if int64(len(result)) > bbolt.MaxValueSize {
		return fmt.Errorf("complete %s: %w: result of %d bytes", id, ErrInvalid, len(result))
	}
	_, err := s.cas(id, []JobState{JobStateRunning}, func(t *txn, j *Job) error {
		if result == nil {
			result = []byte{}
		}
		if err := t.results.Put([]byte(j.ID), result); err != nil {
			return err
		}
		j.State = JobStateCompleted
		j.Error = ""
		j.FinishedAt = s.now()
		return nil
	})
	if err != nil {
		return fmt.Errorf("complete %s: %w", id, err)
	}
	return nil
}

// Fail moves a queued or running job to failed with reason as Error (a queued
// job leaves its queue). Returns ErrStateConflict for a final job, ErrNotFound.
func (s *Store) Fail(id, reason string) error {
	_, err := s.cas(id, []JobState{JobStateQueued, JobStateRunning}, func(_ *txn, j *Job) error {
		j.State = JobStateFailed
		j.Error = reason
		j.FinishedAt = s.now()
		return nil
	})
	if err != nil {
		return fmt.Errorf("fail %s: %w", id, err)
	}
	return nil
}

// Requeue handles a failed attempt of a running job: with attempts left
// (Attempts < MaxAttempts) the job goes back to queued at its original
// position (same priority and Seq, so ahead of later arrivals), otherwise to
// failed. Either way reason becomes Error. Returns the new state;
// ErrStateConflict if the job is not running, ErrNotFound.
func (s *Store) Requeue(id, reason string) (JobState, error) {
	var next JobState
	_, err := s.cas(id, []JobState{JobStateRunning}, func(_ *txn, j *Job) error {
		j.Error = reason
		if j.Attempts < j.MaxAttempts {
			j.State = JobStateQueued
			j.StartedAt = time.Time{}
		} else {
			j.State = JobStateFailed
			j.FinishedAt = s.now()
		}
		next = j.State
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("requeue %s: %w", id, err)
	}
	return next, nil
}

// Release puts a running job back in the queue at its original position
// without counting the attempt (Attempts--): for a graceful shutdown that
// stops jobs before they could finish. Returns ErrStateConflict if the job is
// not running, ErrNotFound.
func (s *Store) Release(id string) error {
	_, err := s.cas(id, []JobState{JobStateRunning}, func(_ *txn, j *Job) error {
		j.State = JobStateQueued
		j.Attempts = max(j.Attempts-1, 0)
		j.StartedAt = time.Time{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}

// Cancel moves a queued or running job to cancelled and returns the state it
// had: for running, the caller must stop the work, whose Complete will then
// get ErrStateConflict. For a final job it returns that state with
// ErrStateConflict; ErrNotFound.
func (s *Store) Cancel(id string) (JobState, error) {
	prev, err := s.cas(id, []JobState{JobStateQueued, JobStateRunning}, func(_ *txn, j *Job) error {
		j.State = JobStateCancelled
		j.FinishedAt = s.now()
		return nil
	})
	if err != nil {
		return prev, fmt.Errorf("cancel %s: %w", id, err)
	}
	return prev, nil
}

// cleanupChunk bounds how many jobs one Cleanup transaction deletes, so the
// committer is not held for long.
const cleanupChunk = 1024

// Cleanup deletes final jobs (completed, failed, cancelled) whose FinishedAt is
// before finishedBefore, with their results. It returns how many it deleted.
// It scans in a read transaction and deletes in chunks, each checked again
// under the write transaction.
func (s *Store) Cleanup(finishedBefore time.Time) (int, error) {
	var ids []string
	err := s.view(func(t *txn) error {
		return t.jobs.ForEach(func(k, v []byte) error {
			var j struct {
				State      JobState  `json:"state"`
				FinishedAt time.Time `json:"finished_at"`
			}
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("decode job %q: %w: %v", k, ErrCorrupt, err)
			}
			if j.State.Final() && j.FinishedAt.Before(finishedBefore) {
				ids = append(ids, string(k))
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("cleanup: %w", err)
	}
	total := 0
	for chunk := range slices.Chunk(ids, cleanupChunk) {
		n := 0
		err := s.write(context.Background(), func(t *txn) (func() error, error) {
			var del []Job
			for _, id := range chunk {
				j, err := t.job(id)
				if err != nil {
					continue // gone meanwhile, or not ours to judge
				}
				if j.State.Final() && j.FinishedAt.Before(finishedBefore) {
					del = append(del, j)
				}
			}
			return func() error {
				n = 0
				for _, j := range del {
					for _, e := range []struct {
						b *bbolt.Bucket
						k []byte
					}{{t.jobs, []byte(j.ID)}, {t.results, []byte(j.ID)}, {t.order, seqKey(j.Seq)}} {
						if err := e.b.Delete(e.k); err != nil {
							return err
						}
					}
					n++
				}
				return nil
			}, nil
		})
		if err != nil {
			return total, fmt.Errorf("cleanup: %w", err)
		}
		total += n
	}
	return total, nil
}

// SetLearnedVRAM records the VRAM (MB) measured for model. Returns ErrInvalid
// for an empty or too long model name or a negative figure.
func (s *Store) SetLearnedVRAM(model string, mb int) error {
	if !validModel(model) || mb < 0 {
		return fmt.Errorf("set learned vram %s: %w: %d MB", model, ErrInvalid, mb)
	}
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		return func() error {
			return t.meta.Bucket(bucketLearnedVRAM).Put([]byte(model), u64(uint64(mb)))
		}, nil
	})
	if err != nil {
		return fmt.Errorf("set learned vram %s: %w", model, err)
	}
	return nil
}
