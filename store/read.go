package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Get returns the job with that ID. Returns ErrNotFound, or ErrCorrupt if the
// stored record cannot be decoded.
func (s *Store) Get(id string) (Job, error) {
	var j Job
	err := s.view(func(t *txn) error {
		if !ValidID(id) {
			return ErrNotFound
		}
		var err error
		j, err = t.job(id)
		return err
	})
	if err != nil {
		return Job{}, fmt.Errorf("get %s: %w", id, err)
	}
	return j, nil
}

// Result returns a copy of the result stored by Complete. Returns ErrNotFound
// if there is none (unknown job, not completed, or cleaned up).
func (s *Store) Result(id string) ([]byte, error) {
	var out []byte
	err := s.view(func(t *txn) error {
		k, v := t.results.Cursor().Seek([]byte(id))
		if k == nil || string(k) != id {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		if out == nil {
			out = []byte{}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("result %s: %w", id, err)
	}
	return out, nil
}

// Depths returns the number of queued jobs per model; models with none are
// absent.
func (s *Store) Depths() (map[string]int, error) {
	out := map[string]int{}
	err := s.view(func(t *txn) error {
		return t.queues.ForEachBucket(func(model []byte) error {
			c := t.queues.Bucket(model).Cursor()
			n := 0
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			if n > 0 {
				out[string(model)] = n
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("depths: %w", err)
	}
	return out, nil
}

// Heads returns, per model with queued jobs, the job Claim would take next.
func (s *Store) Heads() (map[string]Job, error) {
	out := map[string]Job{}
	err := s.view(func(t *txn) error {
		return t.queues.ForEachBucket(func(model []byte) error {
			j, ok, err := s.head(t, t.queues.Bucket(model))
			if err != nil {
				return fmt.Errorf("head of %s: %w", model, err)
			}
			if ok {
				out[string(model)] = j
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("heads: %w", err)
	}
	return out, nil
}

// Position returns the job's 0-based position in its model's queue: how
// many jobs Claim would take before it if claims happened now. Without
// aging that is key order (priority, then arrival), walked in O(position);
// with Options.Aging it is the order head picks, effective priorities taken
// at now (see agedPosition). Returns ErrStateConflict if the job is not
// queued, ErrNotFound.
func (s *Store) Position(id string) (int, error) {
	pos := 0
	err := s.view(func(t *txn) error {
		if !ValidID(id) {
			return ErrNotFound
		}
		j, err := t.job(id)
		if err != nil {
			return err
		}
		if j.State != JobStateQueued {
			return fmt.Errorf("%w: job is %s", ErrStateConflict, j.State)
		}
		key := queueKey(j.Priority, j.Seq)
		qb := t.queues.Bucket([]byte(j.Model))
		if qb == nil || !bytes.Equal(qb.Get(key), []byte(j.ID)) {
			return fmt.Errorf("%w: queued job %s missing from queue %s", ErrCorrupt, j.ID, j.Model)
		}
		if s.aging > 0 {
			pos, err = s.agedPosition(t, qb, j)
			return err
		}
		c := qb.Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k, key) < 0; k, _ = c.Next() {
			pos++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("position %s: %w", id, err)
	}
	return pos, nil
}

// ListFilter selects jobs for List. Zero fields do not filter.
type ListFilter struct {
	Model string
	State JobState
	Limit int // at most this many jobs; 0 = all
	// BeforeSeq, if not 0, keeps only jobs with Seq < BeforeSeq: pass the
	// last Seq of a page to get the next page.
	BeforeSeq uint64
}

// List returns the jobs matching f, newest (highest Seq) first. Filtering by
// State queued or running reads only those indexes; otherwise List walks the
// jobs from the newest and stops at Limit. Returns ErrInvalid for an unknown
// State, ErrCorrupt for a record it cannot decode.
func (s *Store) List(f ListFilter) ([]Job, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, fmt.Errorf("list: %w: state %q", ErrInvalid, f.State)
	}
	match := func(j Job) bool {
		return (f.Model == "" || j.Model == f.Model) &&
			(f.State == "" || j.State == f.State) &&
			(f.BeforeSeq == 0 || j.Seq < f.BeforeSeq)
	}
	full := func(out []Job) bool { return f.Limit > 0 && len(out) >= f.Limit }
	var out []Job
	err := s.view(func(t *txn) error {
		var ids []string
		switch f.State {
		case JobStateRunning:
			_ = t.running.ForEach(func(k, _ []byte) error {
				ids = append(ids, string(k))
				return nil
			})
		case JobStateQueued:
			collect := func(qb *bbolt.Bucket) {
				_ = qb.ForEach(func(_, v []byte) error {
					ids = append(ids, string(v))
					return nil
				})
			}
			if f.Model != "" {
				if qb := t.queues.Bucket([]byte(f.Model)); qb != nil {
					collect(qb)
				}
			} else {
				_ = t.queues.ForEachBucket(func(model []byte) error {
					collect(t.queues.Bucket(model))
					return nil
				})
			}
		default:
			c := t.order.Cursor()
			var k, v []byte
			if f.BeforeSeq > 0 {
				k, _ = c.Seek(seqKey(f.BeforeSeq))
				if k == nil {
					k, v = c.Last()
				} else {
					k, v = c.Prev()
				}
			} else {
				k, v = c.Last()
			}
			for ; k != nil && !full(out); k, v = c.Prev() {
				j, err := t.indexedJob(string(v))
				if err != nil {
					return fmt.Errorf("job %s (seq %d): %w", v, binary.BigEndian.Uint64(k), err)
				}
				if match(j) {
					out = append(out, j)
				}
			}
			return nil
		}
		for _, id := range ids {
			j, err := t.indexedJob(id)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			if match(j) {
				out = append(out, j)
			}
		}
		slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(b.Seq, a.Seq) })
		if f.Limit > 0 && len(out) > f.Limit {
			out = out[:f.Limit]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	return out, nil
}

// Running returns every running job, oldest Seq first.
func (s *Store) Running() ([]Job, error) {
	var out []Job
	err := s.view(func(t *txn) error {
		var ids []string
		_ = t.running.ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
		for _, id := range ids {
			j, err := t.indexedJob(id)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("running: %w", err)
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// LearnedVRAM returns the figures recorded by SetLearnedVRAM, MB per model.
func (s *Store) LearnedVRAM() (map[string]int, error) {
	out := map[string]int{}
	err := s.view(func(t *txn) error {
		return t.meta.Bucket(bucketLearnedVRAM).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: learned vram for %q is %d bytes", ErrCorrupt, k, len(v))
			}
			out[string(k)] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("learned vram: %w", err)
	}
	return out, nil
}

// ReadLearnedVRAM opens the store file at path read-only and returns its
// learned VRAM figures, without recovery or any write. It fails with
// ErrLocked (after timeout) while a daemon holds the file, and returns an
// empty map when the file does not exist.
func ReadLearnedVRAM(path string, timeout time.Duration) (map[string]int, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return map[string]int{}, nil
	}
	var db *bbolt.DB
	err := guard(path, "open", func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("read learned vram: %w", ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("read learned vram: %w", err)
	}
	defer db.Close()
	out := map[string]int{}
	err = guard(path, "read", func() error {
		return db.View(func(tx *bbolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil || meta.Bucket(bucketLearnedVRAM) == nil {
				return nil
			}
			return meta.Bucket(bucketLearnedVRAM).ForEach(func(k, v []byte) error {
				if len(v) == 8 {
					out[string(k)] = int(binary.BigEndian.Uint64(v))
				}
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read learned vram: %w", err)
	}
	return out, nil
}
