package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/vramcram/vramcram/store"
)

// opTimeout bounds one round trip of an operation without a context.
const opTimeout = 5 * time.Second

// claimBackoff is how long a claim that found Redis unreachable waits
// before it reports so.
const claimBackoff = 250 * time.Millisecond

// Enqueue adds j to its model's queue, with the same rules and errors as
// store.Store.Enqueue, plus store.ErrUnavailable when Redis cannot be
// reached (the job may then have been stored or not: the client retries
// with a new ID or checks). When it returns nil the script has run on the
// server; its durability is Redis's appendfsync (docs/fleet.md).
func (s *Store) Enqueue(ctx context.Context, j *store.Job) error {
	rec := *j
	switch {
	case !store.ValidID(rec.ID):
		return fmt.Errorf("enqueue: %w: id %q", store.ErrInvalid, rec.ID)
	case rec.Model == "" || len(rec.Model) > store.MaxModelLen:
		return fmt.Errorf("enqueue %s: %w: model %q", rec.ID, store.ErrInvalid, rec.Model)
	case rec.MaxAttempts < 0:
		return fmt.Errorf("enqueue %s: %w: max attempts %d", rec.ID, store.ErrInvalid, rec.MaxAttempts)
	case len(rec.Params) > 0 && !json.Valid(rec.Params):
		return fmt.Errorf("enqueue %s: %w: params are not valid JSON", rec.ID, store.ErrInvalid)
	case len(rec.Body) > 0 && !json.Valid(rec.Body):
		return fmt.Errorf("enqueue %s: %w: body is not valid JSON", rec.ID, store.ErrInvalid)
	}
	rec.Priority = min(max(rec.Priority, store.MinPriority), store.MaxPriority)
	rec.State, rec.Attempts, rec.Error, rec.Seq = store.JobStateQueued, 0, "", 0
	if rec.MaxAttempts == 0 {
		rec.MaxAttempts = store.DefaultMaxAttempts
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.now()
	}
	rec.CreatedAt = rec.CreatedAt.UTC()
	rec.StartedAt, rec.FinishedAt = time.Time{}, time.Time{}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("enqueue %s: encode: %w", rec.ID, err)
	}
	if s.closed() {
		return fmt.Errorf("enqueue %s: %w", rec.ID, store.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	res, err := scriptEnqueue.Run(ctx, s.rdb, nil, s.p, rec.ID, rec.Model, rec.Priority, data,
		rec.MaxAttempts, rec.CreatedAt.UnixMilli(), s.o.MaxQueued).Slice()
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", rec.ID, s.wrap(err))
	}
	switch status(res) {
	case "ok":
		seq, _ := res[1].(int64)
		rec.Seq = uint64(seq)
		*j = rec
		return nil
	case "conflict":
		return fmt.Errorf("enqueue %s: %w: job exists", rec.ID, store.ErrStateConflict)
	case "full":
		return fmt.Errorf("enqueue %s: %w: %v jobs queued", rec.ID, store.ErrQueueFull, res[1])
	}
	return fmt.Errorf("enqueue %s: unexpected reply %v", rec.ID, res)
}

// Claim moves the head of model's queue to running under a lease held by
// this node, as store.Store.Claim does. Returns store.ErrEmpty,
// store.ErrUnavailable.
func (s *Store) Claim(model string) (store.Job, error) {
	if s.closed() {
		return store.Job{}, fmt.Errorf("claim %s: %w", model, store.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	now := s.now().UTC()
	res, err := scriptClaim.Run(ctx, s.rdb, nil, s.p, model, now.UnixMilli(), s.aging,
		now.Format(time.RFC3339Nano), s.o.Node, s.o.Lease.Milliseconds()).Slice()
	if err != nil {
		err = s.wrap(err)
		if errors.Is(err, store.ErrUnavailable) {
			// The scheduler tries again at once; this keeps an outage from
			// turning its slots into a busy loop.
			select {
			case <-time.After(claimBackoff):
			case <-s.closing:
			}
		}
		return store.Job{}, fmt.Errorf("claim %s: %w", model, err)
	}
	switch status(res) {
	case "empty":
		return store.Job{}, fmt.Errorf("claim %s: %w", model, store.ErrEmpty)
	case "corrupt":
		return store.Job{}, fmt.Errorf("claim %s: %w: %v", model, store.ErrCorrupt, res[1])
	case "ok":
	default:
		return store.Job{}, fmt.Errorf("claim %s: unexpected reply %v", model, res)
	}
	tok, _ := res[1].(string)
	fields, _ := res[2].([]any)
	j, err := decode(fields)
	if err != nil {
		return store.Job{}, fmt.Errorf("claim %s: %w", model, err)
	}
	s.mu.Lock()
	s.claimed[j.ID] = tok
	s.mu.Unlock()
	return j, nil
}

func status(res []any) string {
	if len(res) == 0 {
		return ""
	}
	st, _ := res[0].(string)
	return st
}

// transition runs one compare-and-set; the outcome of a job this node runs
// (every op but cancel) is retried while Redis is unreachable, for up to
// Options.RetryFor, so that a job that ran through an outage still gets
// its result stored. Returns the state before and after.
func (s *Store) transition(op, id, reason string, result []byte) (store.JobState, store.JobState, error) {
	if !store.ValidID(id) {
		return "", "", store.ErrNotFound
	}
	tok := s.token(id)
	deadline := time.Now().Add(s.o.RetryFor)
	wait := 100 * time.Millisecond
	for {
		if s.closed() {
			return "", "", store.ErrClosed
		}
		now := s.now().UTC()
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		res, err := scriptTransition.Run(ctx, s.rdb, nil, s.p, id, op, tok,
			now.Format(time.RFC3339Nano), now.UnixMicro(), reason, result).Slice()
		cancel()
		err = s.wrap(err)
		if errors.Is(err, store.ErrUnavailable) && op != "cancel" && time.Now().Before(deadline) {
			s.log.Warn("store unreachable: retrying the outcome of a job", "job_id", id, "op", op, "retry_in", wait, "err", err)
			select {
			case <-time.After(wait):
			case <-s.closing:
			}
			wait = min(wait*2, 2*time.Second)
			continue
		}
		if err != nil {
			return "", "", err
		}
		switch status(res) {
		case "notfound":
			return "", "", store.ErrNotFound
		case "conflict":
			prev, _ := res[1].(string)
			if op != "cancel" && op != "fail" {
				s.forget(id, tok)
			}
			return store.JobState(prev), "", fmt.Errorf("%w: job is %s", store.ErrStateConflict, prev)
		case "ok":
			prev, _ := res[1].(string)
			next, _ := res[2].(string)
			if store.JobState(prev) == store.JobStateRunning {
				s.forget(id, tok)
			}
			return store.JobState(prev), store.JobState(next), nil
		}
		return "", "", fmt.Errorf("unexpected reply %v", res)
	}
}

// Complete stores result and moves the job to completed; only the node
// holding the job's lease may (a node whose lease expired gets
// store.ErrStateConflict and its result is dropped: stored once).
func (s *Store) Complete(id string, result []byte) error {
	if result == nil {
		result = []byte{}
	}
	if _, _, err := s.transition("complete", id, "", result); err != nil {
		return fmt.Errorf("complete %s: %w", id, err)
	}
	return nil
}

// Fail moves a queued job, or a running job this node holds, to failed.
func (s *Store) Fail(id, reason string) error {
	if _, _, err := s.transition("fail", id, reason, nil); err != nil {
		return fmt.Errorf("fail %s: %w", id, err)
	}
	return nil
}

// Requeue ends a failed attempt of a job this node holds: queued with
// attempts left, failed otherwise. Returns the new state.
func (s *Store) Requeue(id, reason string) (store.JobState, error) {
	_, next, err := s.transition("requeue", id, reason, nil)
	if err != nil {
		return "", fmt.Errorf("requeue %s: %w", id, err)
	}
	return next, nil
}

// Release puts a job this node holds back in the queue without counting the
// attempt.
func (s *Store) Release(id string) error {
	if _, _, err := s.transition("release", id, "", nil); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}

// Cancel moves a queued or running job (on any node) to cancelled and
// returns the state it had.
func (s *Store) Cancel(id string) (store.JobState, error) {
	prev, _, err := s.transition("cancel", id, "", nil)
	if err != nil {
		return prev, fmt.Errorf("cancel %s: %w", id, err)
	}
	return prev, nil
}

// Cleanup deletes final jobs finished before finishedBefore, with their
// results, in chunks; it returns how many it deleted.
func (s *Store) Cleanup(finishedBefore time.Time) (int, error) {
	const chunk = 512
	total := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		res, err := scriptCleanup.Run(ctx, s.rdb, nil, s.p, finishedBefore.UnixMicro(), chunk).Int64Slice()
		cancel()
		if err != nil {
			return total, fmt.Errorf("cleanup: %w", s.wrap(err))
		}
		total += int(res[1])
		if res[0] < chunk {
			return total, nil
		}
	}
}

// SetLearnedVRAM records the VRAM (MB) measured for model.
func (s *Store) SetLearnedVRAM(model string, mb int) error {
	if model == "" || len(model) > store.MaxModelLen || mb < 0 {
		return fmt.Errorf("set learned vram %s: %w: %d MB", model, store.ErrInvalid, mb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.rdb.HSet(ctx, s.p+"learned", model, mb).Err(); err != nil {
		return fmt.Errorf("set learned vram %s: %w", model, s.wrap(err))
	}
	return nil
}

// LearnedVRAM returns the figures recorded by SetLearnedVRAM.
func (s *Store) LearnedVRAM() (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	m, err := s.rdb.HGetAll(ctx, s.p+"learned").Result()
	if err != nil {
		return nil, fmt.Errorf("learned vram: %w", s.wrap(err))
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("learned vram %s: %w: %q", k, store.ErrCorrupt, v)
		}
		out[k] = n
	}
	return out, nil
}
