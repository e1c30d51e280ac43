package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/bbolt"
)

// Batch buckets, created by the first write that needs them (as files).
var (
	bucketBatches    = []byte("batches")     // id → JSON Batch, ids sort by creation time
	bucketBatchLines = []byte("batch_lines") // batch id → nested bucket: 4-byte line → custom_id
)

// BatchStatus is where an OpenAI batch is in its lifecycle:
//
//	validating ─► failed (a bad line)
//	    │
//	    ▼
//	in_progress ─► finalizing ─► completed | expired
//	    │                    ▲
//	    ▼                    │
//	cancelling ──────────────┴─► cancelled
type BatchStatus string

// Batch statuses (OpenAI's names).
const (
	BatchValidating BatchStatus = "validating"
	BatchFailed     BatchStatus = "failed"
	BatchInProgress BatchStatus = "in_progress"
	BatchFinalizing BatchStatus = "finalizing"
	BatchCompleted  BatchStatus = "completed"
	BatchCancelling BatchStatus = "cancelling"
	BatchCancelled  BatchStatus = "cancelled"
	BatchExpired    BatchStatus = "expired"
)

// BatchStatuses lists every status.
func BatchStatuses() []BatchStatus {
	return []BatchStatus{BatchValidating, BatchFailed, BatchInProgress, BatchFinalizing, BatchCompleted,
		BatchCancelling, BatchCancelled, BatchExpired}
}

// Final reports whether no transition leaves s.
func (s BatchStatus) Final() bool {
	switch s {
	case BatchFailed, BatchCompleted, BatchCancelled, BatchExpired:
		return true
	}
	return false
}

// BatchError is one problem of a batch: a bad input line (Line > 0) or why
// it stopped.
type BatchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    int    `json:"line,omitempty"` // 1-based line of the input file
}

// BatchCounts are a batch's request counts.
type BatchCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Batch is the record of an OpenAI batch. Each request line k (0-based,
// blank lines skipped) becomes the job BatchJobID(ID, k); the jobs are the
// source of truth for the lines' outcomes and the output files are derived
// from them at the end. Field json names are part of the on-disk format.
type Batch struct {
	ID               string            `json:"id"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Status           BatchStatus       `json:"status"`
	Errors           []BatchError      `json:"errors,omitempty"`
	OutputFileID     string            `json:"output_file_id,omitempty"`
	ErrorFileID      string            `json:"error_file_id,omitempty"`
	Counts           BatchCounts       `json:"request_counts"`
	// Expire is set when the completion window passed: the unfinished lines
	// were cancelled and the final status is expired.
	Expire bool `json:"expire,omitempty"`

	// Enqueued is how many lines have become jobs, and Offset the byte
	// offset in the input file just after the last of them: the cursor that
	// lets enqueueing resume after a crash.
	Enqueued int   `json:"enqueued"`
	Offset   int64 `json:"offset"`

	CreatedAt    time.Time `json:"created_at"`
	InProgressAt time.Time `json:"in_progress_at,omitzero"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	FinalizingAt time.Time `json:"finalizing_at,omitzero"`
	CompletedAt  time.Time `json:"completed_at,omitzero"`
	FailedAt     time.Time `json:"failed_at,omitzero"`
	ExpiredAt    time.Time `json:"expired_at,omitzero"`
	CancellingAt time.Time `json:"cancelling_at,omitzero"`
	CancelledAt  time.Time `json:"cancelled_at,omitzero"`
}

// MaxBatchIDLen is the longest batch ID: its jobs' IDs add "-" and a line
// number of up to 10 digits, and must stay valid job IDs (MaxIDLen).
const MaxBatchIDLen = MaxIDLen - 11

// BatchJobID is the ID of the job of line k of batch id: deterministic, so
// a line can never become two jobs.
func BatchJobID(id string, line int) string { return id + "-" + strconv.Itoa(line) }

// BatchLine is one request line to enqueue.
type BatchLine struct {
	CustomID string
	Model    string
	Type     string
	Body     json.RawMessage
	// End is the byte offset in the input file just after the line.
	End int64
}

// BatchLineState is one line's job as the output needs it.
type BatchLineState struct {
	Line     int
	CustomID string
	Job      Job    // zero ID: the job record is gone (retention)
	Result   []byte // a completed job's result
}

func lineKey(k int) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(k))
	return b
}

func decodeBatch(id string, v []byte) (Batch, error) {
	var b Batch
	if err := json.Unmarshal(v, &b); err != nil || b.ID != id {
		return Batch{}, fmt.Errorf("%w: batch record %q", ErrCorrupt, id)
	}
	return b, nil
}

func putBatchTx(tx *bbolt.Tx, b *Batch) error {
	bb, err := tx.CreateBucketIfNotExists(bucketBatches)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketBatches, err)
	}
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode batch %s: %w", b.ID, err)
	}
	return bb.Put([]byte(b.ID), v)
}

func batchTx(tx *bbolt.Tx, id string) (Batch, error) {
	bb := tx.Bucket(bucketBatches)
	if bb == nil || !ValidID(id) {
		return Batch{}, ErrNotFound
	}
	v := bb.Get([]byte(id))
	if v == nil {
		return Batch{}, ErrNotFound
	}
	return decodeBatch(id, v)
}

// CreateBatch records b. Returns ErrInvalid for a bad ID, ErrStateConflict
// if it exists, ErrClosed or ctx's error.
func (s *Store) CreateBatch(ctx context.Context, b Batch) error {
	if !ValidID(b.ID) || len(b.ID) > MaxBatchIDLen {
		return fmt.Errorf("create batch: %w: id %q (at most %d bytes)", ErrInvalid, b.ID, MaxBatchIDLen)
	}
	err := s.write(ctx, func(t *txn) (func() error, error) {
		if _, err := batchTx(t.tx, b.ID); err == nil {
			return nil, fmt.Errorf("%w: batch exists", ErrStateConflict)
		}
		return func() error { return putBatchTx(t.tx, &b) }, nil
	})
	if err != nil {
		return fmt.Errorf("create batch %s: %w", b.ID, err)
	}
	return nil
}

// GetBatch returns batch id. Returns ErrNotFound, ErrCorrupt.
func (s *Store) GetBatch(id string) (Batch, error) {
	var b Batch
	err := s.view(func(t *txn) error {
		var err error
		b, err = batchTx(t.tx, id)
		return err
	})
	if err != nil {
		return Batch{}, fmt.Errorf("get batch %s: %w", id, err)
	}
	return b, nil
}

// ListBatches returns up to limit batches (all when 0), newest first,
// starting after the batch whose ID is after (from the newest when empty).
func (s *Store) ListBatches(after string, limit int) ([]Batch, error) {
	var out []Batch
	err := s.view(func(t *txn) error {
		bb := t.tx.Bucket(bucketBatches)
		if bb == nil {
			return nil
		}
		return reverseFrom(bb, after, func(k, v []byte) (bool, error) {
			b, err := decodeBatch(string(k), v)
			if err != nil {
				return false, err
			}
			out = append(out, b)
			return limit > 0 && len(out) >= limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	return out, nil
}

// UpdateBatch applies change to batch id in one transaction and returns the
// record written. An error from change aborts the update and is returned
// as is (wrapped); change sees a copy. Returns ErrNotFound.
func (s *Store) UpdateBatch(id string, change func(b *Batch) error) (Batch, error) {
	var out Batch
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		b, err := batchTx(t.tx, id)
		if err != nil {
			return nil, err
		}
		if err := change(&b); err != nil {
			return nil, err
		}
		return func() error {
			out = b
			return putBatchTx(t.tx, &b)
		}, nil
	})
	if err != nil {
		return Batch{}, fmt.Errorf("update batch %s: %w", id, err)
	}
	return out, nil
}

// EnqueueBatchLines makes jobs of lines, which are the batch's lines from
// number `from` on, in one transaction with the batch's cursor (Enqueued,
// Offset) and the lines' custom IDs: a crash either keeps all of it or
// none. It enqueues as many lines as Options.MaxQueued leaves room for and
// returns how many; 0 with ErrQueueFull when there is no room.
//
// Returns ErrStateConflict if the batch is not in_progress or its cursor is
// not at from (another call got there first), ErrNotFound.
func (s *Store) EnqueueBatchLines(id string, from int, lines []BatchLine, priority, maxAttempts int) (int, error) {
	for _, l := range lines {
		if !validModel(l.Model) || (len(l.Body) > 0 && !json.Valid(l.Body)) {
			return 0, fmt.Errorf("enqueue batch %s lines: %w: model %q", id, ErrInvalid, l.Model)
		}
	}
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	n := 0
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		b, err := batchTx(t.tx, id)
		if err != nil {
			return nil, err
		}
		if b.Status != BatchInProgress || b.Enqueued != from {
			return nil, fmt.Errorf("%w: batch %s at line %d, asked for %d", ErrStateConflict, b.Status, b.Enqueued, from)
		}
		room := len(lines)
		if s.maxQueued > 0 {
			room = min(room, int(s.maxQueued)-int(min(t.queuedCount(), s.maxQueued)))
		}
		if room == 0 && len(lines) > 0 {
			return nil, fmt.Errorf("%w: %d jobs queued", ErrQueueFull, t.queuedCount())
		}
		return func() error {
			n = room
			return s.enqueueLinesTx(t, &b, lines[:room], priority, maxAttempts)
		}, nil
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue batch %s lines from %d: %w", id, from, err)
	}
	return n, nil
}

func (s *Store) enqueueLinesTx(t *txn, b *Batch, lines []BatchLine, priority, maxAttempts int) error {
	lb, err := t.tx.CreateBucketIfNotExists(bucketBatchLines)
	if err != nil {
		return err
	}
	nb, err := lb.CreateBucketIfNotExists([]byte(b.ID))
	if err != nil {
		return err
	}
	now := s.now()
	for _, l := range lines {
		k := b.Enqueued
		j := Job{ID: BatchJobID(b.ID, k), Model: l.Model, Type: l.Type, Endpoint: b.Endpoint, Body: l.Body,
			Priority: clampPriority(priority), State: JobStateQueued, MaxAttempts: maxAttempts, CreatedAt: now}
		if t.jobs.Get([]byte(j.ID)) != nil {
			return fmt.Errorf("%w: job %s exists", ErrCorrupt, j.ID)
		}
		seq, err := t.jobs.NextSequence()
		if err != nil {
			return err
		}
		j.Seq = seq
		if err := t.order.Put(seqKey(seq), []byte(j.ID)); err != nil {
			return err
		}
		if err := t.pushQueue(&j); err != nil {
			return err
		}
		if err := t.putJob(&j); err != nil {
			return err
		}
		if err := nb.Put(lineKey(k), []byte(l.CustomID)); err != nil {
			return err
		}
		b.Enqueued++
		b.Offset = l.End
	}
	return putBatchTx(t.tx, b)
}

// BatchLines returns the lines [from, from+n) of batch id that have been
// enqueued, with their jobs and the results of completed ones.
func (s *Store) BatchLines(id string, from, n int) ([]BatchLineState, error) {
	var out []BatchLineState
	err := s.view(func(t *txn) error {
		nb := batchLinesBucket(t.tx, id)
		if nb == nil {
			return nil
		}
		c := nb.Cursor()
		for k, v := c.Seek(lineKey(from)); k != nil && len(out) < n; k, v = c.Next() {
			line := int(binary.BigEndian.Uint32(k))
			st := BatchLineState{Line: line, CustomID: string(v)}
			j, err := t.job(BatchJobID(id, line))
			switch {
			case err == nil:
				st.Job = j
				if j.State == JobStateCompleted {
					st.Result = bytes.Clone(t.results.Get([]byte(j.ID)))
				}
			case !errors.Is(err, ErrNotFound):
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("batch %s lines: %w", id, err)
	}
	return out, nil
}

func batchLinesBucket(tx *bbolt.Tx, id string) *bbolt.Bucket {
	lb := tx.Bucket(bucketBatchLines)
	if lb == nil {
		return nil
	}
	return lb.Bucket([]byte(id))
}

// BatchJobStates counts the enqueued lines of batch id by their job's state;
// a line whose job record is gone counts under "".
func (s *Store) BatchJobStates(id string) (map[JobState]int, error) {
	out := map[JobState]int{}
	err := s.view(func(t *txn) error {
		nb := batchLinesBucket(t.tx, id)
		if nb == nil {
			return nil
		}
		return nb.ForEach(func(k, _ []byte) error {
			v := t.jobs.Get([]byte(BatchJobID(id, int(binary.BigEndian.Uint32(k)))))
			if v == nil {
				out[""]++
				return nil
			}
			var j struct {
				State JobState `json:"state"`
			}
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("%w: job of line %d", ErrCorrupt, binary.BigEndian.Uint32(k))
			}
			out[j.State]++
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("batch %s job states: %w", id, err)
	}
	return out, nil
}

// CancelBatchLines cancels the queued jobs of lines [from, from+n) of batch
// id in one transaction (running jobs are left to finish) and returns the
// models whose queues lost jobs, with how many each.
func (s *Store) CancelBatchLines(id string, from, n int) (map[string]int, error) {
	models := map[string]int{}
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		nb := batchLinesBucket(t.tx, id)
		if nb == nil {
			return nil, nil
		}
		var queued []Job
		c := nb.Cursor()
		for k, _ := c.Seek(lineKey(from)); k != nil && int(binary.BigEndian.Uint32(k)) < from+n; k, _ = c.Next() {
			j, err := t.job(BatchJobID(id, int(binary.BigEndian.Uint32(k))))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if j.State == JobStateQueued {
				queued = append(queued, j)
			}
		}
		return func() error {
			clear(models)
			now := s.now()
			for _, j := range queued {
				j.State = JobStateCancelled
				j.FinishedAt = now
				if err := t.transition(&j, JobStateQueued); err != nil {
					return err
				}
				models[j.Model]++
			}
			return nil
		}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("cancel batch %s lines: %w", id, err)
	}
	return models, nil
}

// FinishBatch records the end of batch id in one transaction: the output
// files' records (which the caller has written to disk) and the batch as
// change leaves it. A file record that exists is replaced (a finalize
// redone after a crash). Returns ErrNotFound, or change's error.
func (s *Store) FinishBatch(id string, files []File, change func(b *Batch) error) (Batch, error) {
	var out Batch
	recs := make([][]byte, len(files))
	for k, f := range files {
		if !ValidID(f.ID) {
			return Batch{}, fmt.Errorf("finish batch %s: %w: file id %q", id, ErrInvalid, f.ID)
		}
		f.CreatedAt = f.CreatedAt.UTC()
		recs[k], _ = json.Marshal(f)
	}
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		b, err := batchTx(t.tx, id)
		if err != nil {
			return nil, err
		}
		if err := change(&b); err != nil {
			return nil, err
		}
		return func() error {
			for k, f := range files {
				if err := putFileTx(t.tx, f.ID, recs[k]); err != nil {
					return err
				}
			}
			out = b
			return putBatchTx(t.tx, &b)
		}, nil
	})
	if err != nil {
		return Batch{}, fmt.Errorf("finish batch %s: %w", id, err)
	}
	return out, nil
}
