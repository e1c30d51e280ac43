package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers branch on. Every error the package returns wraps at most one
// of them, so errors.Is works through the added context.
var (
	// ErrNotFound: no job with that ID (or no result for it).
	ErrNotFound = errors.New("job not found")
	// ErrEmpty: Claim found no queued job for the model.
	ErrEmpty = errors.New("queue empty")
	// ErrStateConflict: the compare-and-set of a transition failed (the job is
	// not in a state the operation accepts), or Enqueue got an ID that exists.
	ErrStateConflict = errors.New("job state conflict")
	// ErrQueueFull: Options.MaxQueued jobs are already queued.
	ErrQueueFull = errors.New("queue full")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalid: the caller passed an invalid job, ID, model or figure.
	ErrInvalid = errors.New("invalid job")
	// ErrCorrupt: a stored record or index entry breaks the format's rules.
	ErrCorrupt = errors.New("corrupt store record")
	// ErrLocked: another process holds the file (Options.Timeout passed).
	ErrLocked = errors.New("store file locked by another process")
	// ErrNoSpace: a write failed because the disk (or quota) holding the
	// file is full; it succeeds again once there is room.
	ErrNoSpace = errors.New("no space left for the store file")
)

// Bucket and key names: the on-disk layout (see the package doc).
var (
	bucketJobs        = []byte("jobs")         // id → JSON Job
	bucketQueues      = []byte("queues")       // model → nested bucket: queueKey → id
	bucketResults     = []byte("results")      // id → result bytes
	bucketMeta        = []byte("meta")         // keyVersion, keyQueued, bucketLearnedVRAM
	bucketOrder       = []byte("order")        // seqKey → id, every job
	bucketRunning     = []byte("running")      // id → model, running jobs
	bucketLearnedVRAM = []byte("learned_vram") // in meta: model → 8-byte big-endian MB

	keyVersion = []byte("version") // 8-byte big-endian schema version (schema.go)
	keyQueued  = []byte("queued")  // 8-byte big-endian number of queued jobs
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Timeout bounds the wait for bbolt's file lock; default 1s, so a second
	// daemon on the same file fails with ErrLocked instead of hanging.
	Timeout time.Duration
	// MaxQueued caps the number of queued jobs over all models; Enqueue
	// returns ErrQueueFull at the cap. 0 means unlimited. Jobs that come back
	// to the queue (Requeue, Release, recovery) are never refused.
	MaxQueued int
	// NowFunc is the clock; default time.Now. Times are stored in UTC.
	NowFunc func() time.Time
	// Aging raises a queued job's priority by one for every Aging it has
	// waited, for the choice of the next job (Claim, Heads, Position), so that a
	// stream of high-priority jobs cannot starve low ones. 0 disables it.
	Aging time.Duration
	// NoSync skips fsync. Tests and benchmarks only: a power loss can then
	// lose acknowledged jobs or corrupt the file.
	NoSync bool
}

// Store is the job queue and record, one bbolt file. All writes go through one
// committer goroutine that groups concurrent operations into one transaction
// (see the package doc); reads run in parallel bbolt read transactions. A
// Store is safe for concurrent use.
type Store struct {
	db        *bbolt.DB
	path      string
	maxQueued uint64
	nowFunc   func() time.Time
	aging     time.Duration

	reqCh     chan *writeReq // unbuffered: a send that succeeds is accepted
	closingCh chan struct{}  // closed by Close: stop accepting
	doneCh    chan struct{}  // closed by the committer when it exits
	closeOnce sync.Once
	closeErr  error

	recovered       int // written by Open only
	recoveredFailed int
	migrated        *MigrationReport

	commits atomic.Uint64 // bbolt commits by the committer (tests, benchmarks)
}

// Open opens or creates the store file at path (and its directory), checks
// it, brings an older schema up to SchemaVersion (after a backup copy, see
// migrate), creates the buckets, and recovers from a crash: every job left
// running goes back to queued at its original position, keeping the attempt
// Claim counted, or becomes failed ("interrupted: daemon restarted after N
// attempts") when Attempts >= MaxAttempts.
//
// Returns ErrLocked if another process holds the file for Options.Timeout,
// ErrNewerSchema for a file written by a newer vramcram, and ErrCorrupt for
// a damaged file (truncated, bad pages: the error names the file and the
// store check and recover commands) or a record recovery cannot decode.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.NowFunc == nil {
		opts.NowFunc = time.Now
	}
	if opts.MaxQueued < 0 {
		return nil, fmt.Errorf("open %s: %w: max queued %d", path, ErrInvalid, opts.MaxQueued)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db, err := openChecked(path, &bbolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		path:      path,
		maxQueued: uint64(opts.MaxQueued),
		nowFunc:   opts.NowFunc,
		aging:     opts.Aging,
		reqCh:     make(chan *writeReq),
		closingCh: make(chan struct{}),
		doneCh:    make(chan struct{}),
	}
	err = guard(path, "open", func() error {
		m, err := migrate(db, path, s.now())
		if err != nil {
			return err
		}
		s.migrated = m
		return db.Update(s.recover)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, classify(err))
	}
	go s.loop()
	return s, nil
}

// openChecked opens the bbolt file and checks every page of it, turning
// bbolt's panics on a damaged file into ErrCorrupt.
func openChecked(path string, bo *bbolt.Options) (*bbolt.DB, error) {
	if err := preflight(path); err != nil {
		return nil, err
	}
	var db *bbolt.DB
	err := guard(path, "open", func() (err error) {
		db, err = bbolt.Open(path, 0o600, bo)
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w (waited %s)", ErrLocked, bo.Timeout)
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		return nil, corruptError(path, err.Error())
	}
	if err != nil {
		return nil, classify(err)
	}
	if err := deepCheck(path, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// recover creates the layout and requeues (or fails) jobs left running.
func (s *Store) recover(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketJobs, bucketQueues, bucketResults, bucketMeta, bucketOrder, bucketRunning} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if _, err := meta.CreateBucketIfNotExists(bucketLearnedVRAM); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketLearnedVRAM, err)
	}

	t, err := newTxn(tx)
	if err != nil {
		return err
	}
	var ids []string // collect keys before changing the bucket
	if err := t.running.ForEach(func(k, _ []byte) error {
		ids = append(ids, string(k))
		return nil
	}); err != nil {
		return err
	}
	now := s.now()
	for _, id := range ids {
		j, err := t.indexedJob(id)
		if err != nil {
			return fmt.Errorf("recover job %s: %w", id, err)
		}
		if j.State != JobStateRunning {
			return fmt.Errorf("recover job %s: %w: in running index but %s", id, ErrCorrupt, j.State)
		}
		if j.Attempts >= j.MaxAttempts {
			j.State = JobStateFailed
			j.Error = fmt.Sprintf("interrupted: daemon restarted after %d attempts", j.Attempts)
			j.FinishedAt = now
			s.recoveredFailed++
		} else {
			j.State = JobStateQueued
			j.Error = fmt.Sprintf("interrupted: daemon restarted during attempt %d", j.Attempts)
			j.StartedAt = time.Time{}
			s.recovered++
		}
		if err := t.transition(&j, JobStateRunning); err != nil {
			return fmt.Errorf("recover job %s: %w", id, err)
		}
	}

	// Recount the queued counter from the index it summarises.
	var n uint64
	if err := t.queues.ForEachBucket(func(model []byte) error {
		c := t.queues.Bucket(model).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	}); err != nil {
		return err
	}
	return t.meta.Put(keyQueued, u64(n))
}

// Recovered reports how many running jobs Open put back in the queue.
func (s *Store) Recovered() int { return s.recovered }

// RecoveredFailed reports how many running jobs Open failed because they had
// used up their attempts.
func (s *Store) RecoveredFailed() int { return s.recoveredFailed }

// Migrated reports the schema migration Open ran on an older file, or nil.
func (s *Store) Migrated() *MigrationReport { return s.migrated }

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close stops accepting operations, waits until every operation already
// accepted is committed and answered, and closes the file. Later operations
// return ErrClosed. Close is idempotent: later calls return the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closingCh)
		<-s.doneCh
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

func (s *Store) now() time.Time { return s.nowFunc().UTC() }

func (s *Store) closed() bool {
	select {
	case <-s.closingCh:
		return true
	default:
		return false
	}
}

// view runs fn in a read transaction.
func (s *Store) view(fn func(t *txn) error) error {
	if s.closed() {
		return ErrClosed
	}
	err := guard(s.path, "read", func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			t, err := newTxn(tx)
			if err != nil {
				return err
			}
			return fn(t)
		})
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Check runs bbolt's consistency check (tx.Check) and then checks the
// package's own invariants: every record decodes, and the order, queue and
// running indexes, the queued counter and the results agree with the job
// states. All problems found are joined; nil means consistent.
//
// bbolt's check reads the freelist, which is only safe beside concurrent
// writers when it runs inside the write transaction, so Check goes through the
// committer and holds up writes while it walks the whole file. Meant for tests
// and diagnostics, not for a request path.
func (s *Store) Check() error {
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		var errs []error
		for err := range t.tx.Check() {
			errs = append(errs, err)
		}
		errs = append(errs, t.checkIndexes()...)
		return nil, errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", s.path, err)
	}
	return nil
}

// txn is a transaction with the top-level buckets looked up.
type txn struct {
	tx                                          *bbolt.Tx
	jobs, queues, results, meta, order, running *bbolt.Bucket
}

// appendFill is how full bbolt leaves a page it splits in the buckets whose
// keys mostly grow (jobs by time-ordered ID, order and queues by Seq): new
// keys land on the last page, so the pages left behind stay nearly full
// instead of half empty (bbolt's default), which halves the pages a commit
// writes.
const appendFill = 0.9

func newTxn(tx *bbolt.Tx) (*txn, error) {
	t := &txn{
		tx:      tx,
		jobs:    tx.Bucket(bucketJobs),
		queues:  tx.Bucket(bucketQueues),
		results: tx.Bucket(bucketResults),
		meta:    tx.Bucket(bucketMeta),
		order:   tx.Bucket(bucketOrder),
		running: tx.Bucket(bucketRunning),
	}
	if t.jobs == nil || t.queues == nil || t.results == nil || t.meta == nil || t.order == nil || t.running == nil {
		return nil, fmt.Errorf("%w: missing bucket", ErrCorrupt)
	}
	t.jobs.FillPercent, t.order.FillPercent = appendFill, appendFill
	return t, nil
}

// job reads and decodes one record. Returns ErrNotFound or ErrCorrupt.
func (t *txn) job(id string) (Job, error) {
	v := t.jobs.Get([]byte(id))
	if v == nil {
		return Job{}, ErrNotFound
	}
	return decodeJob([]byte(id), v)
}

// indexedJob reads a job whose ID came from an index: a missing record is
// then corruption, not ErrNotFound.
func (t *txn) indexedJob(id string) (Job, error) {
	j, err := t.job(id)
	if errors.Is(err, ErrNotFound) {
		return Job{}, fmt.Errorf("%w: index entry for missing job %q", ErrCorrupt, id)
	}
	return j, err
}

func (t *txn) putJob(j *Job) error {
	b, err := encodeJob(j)
	if err != nil {
		return err
	}
	return t.jobs.Put([]byte(j.ID), b)
}

func (t *txn) queuedCount() uint64 {
	v := t.meta.Get(keyQueued)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (t *txn) addQueued(delta int) error {
	n := int64(t.queuedCount()) + int64(delta)
	if n < 0 {
		return fmt.Errorf("%w: queued counter below zero", ErrCorrupt)
	}
	return t.meta.Put(keyQueued, u64(uint64(n)))
}

func (t *txn) pushQueue(j *Job) error {
	qb, err := t.queues.CreateBucketIfNotExists([]byte(j.Model))
	if err != nil {
		return fmt.Errorf("queue bucket %s: %w", j.Model, err)
	}
	qb.FillPercent = appendFill
	if err := qb.Put(queueKey(j.Priority, j.Seq), []byte(j.ID)); err != nil {
		return err
	}
	return t.addQueued(1)
}

// popQueue removes j's queue entry, and the model's bucket once empty.
func (t *txn) popQueue(j *Job) error {
	qb := t.queues.Bucket([]byte(j.Model))
	key := queueKey(j.Priority, j.Seq)
	if qb == nil || !bytes.Equal(qb.Get(key), []byte(j.ID)) {
		return fmt.Errorf("%w: queued job %s missing from queue %s", ErrCorrupt, j.ID, j.Model)
	}
	if err := qb.Delete(key); err != nil {
		return err
	}
	if k, _ := qb.Cursor().First(); k == nil {
		if err := t.queues.DeleteBucket([]byte(j.Model)); err != nil {
			return err
		}
	}
	return t.addQueued(-1)
}

// transition writes j, whose State the caller changed from `from`, and moves
// its entries between the queue and running indexes so that queued ⇔ in a
// queue bucket and running ⇔ in the running bucket.
func (t *txn) transition(j *Job, from JobState) error {
	if from == JobStateQueued && j.State != JobStateQueued {
		if err := t.popQueue(j); err != nil {
			return err
		}
	}
	if from == JobStateRunning && j.State != JobStateRunning {
		if err := t.running.Delete([]byte(j.ID)); err != nil {
			return err
		}
	}
	if j.State == JobStateQueued && from != JobStateQueued {
		if err := t.pushQueue(j); err != nil {
			return err
		}
	}
	if j.State == JobStateRunning && from != JobStateRunning {
		if err := t.running.Put([]byte(j.ID), []byte(j.Model)); err != nil {
			return err
		}
	}
	return t.putJob(j)
}

// checkIndexes verifies the package invariants; it reports at most
// maxCheckErrs problems.
func (t *txn) checkIndexes() []error {
	const maxCheckErrs = 100
	var errs []error
	add := func(format string, args ...any) {
		if len(errs) < maxCheckErrs {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	states := map[string]Job{}
	_ = t.jobs.ForEach(func(k, v []byte) error {
		j, err := decodeJob(k, v)
		if err != nil {
			add("%w", err)
			return nil
		}
		states[j.ID] = j
		if got := t.order.Get(seqKey(j.Seq)); string(got) != j.ID {
			add("job %s: order entry for seq %d is %q", j.ID, j.Seq, got)
		}
		inQueue := false
		if qb := t.queues.Bucket([]byte(j.Model)); qb != nil {
			inQueue = string(qb.Get(queueKey(j.Priority, j.Seq))) == j.ID
		}
		if inQueue != (j.State == JobStateQueued) {
			add("job %s: state %s but in queue index: %t", j.ID, j.State, inQueue)
		}
		if inRunning := t.running.Get([]byte(j.ID)) != nil; inRunning != (j.State == JobStateRunning) {
			add("job %s: state %s but in running index: %t", j.ID, j.State, inRunning)
		}
		return nil
	})
	_ = t.order.ForEach(func(k, v []byte) error {
		j, ok := states[string(v)]
		if !ok || len(k) != 8 || j.Seq != binary.BigEndian.Uint64(k) {
			add("order entry %x → %q: no such job with that seq", k, v)
		}
		return nil
	})
	var queued uint64
	_ = t.queues.ForEach(func(model, v []byte) error {
		qb := t.queues.Bucket(model)
		if qb == nil {
			add("queues: key %q is not a bucket", model)
			return nil
		}
		n := 0
		_ = qb.ForEach(func(k, v []byte) error {
			n++
			queued++
			j, ok := states[string(v)]
			if !ok || j.State != JobStateQueued || j.Model != string(model) || !bytes.Equal(k, queueKey(j.Priority, j.Seq)) {
				add("queue %s entry %x → %q: no such queued job at that key", model, k, v)
			}
			return nil
		})
		if n == 0 {
			add("queue %s: empty bucket left behind", model)
		}
		return nil
	})
	if got := t.queuedCount(); got != queued {
		add("queued counter %d, queue entries %d", got, queued)
	}
	_ = t.running.ForEach(func(k, v []byte) error {
		if j, ok := states[string(k)]; !ok || j.State != JobStateRunning || j.Model != string(v) {
			add("running entry %q: no such running job", k)
		}
		return nil
	})
	_ = t.results.ForEach(func(k, _ []byte) error {
		if j, ok := states[string(k)]; !ok || j.State != JobStateCompleted {
			add("result %q: no such completed job", k)
		}
		return nil
	})
	return errs
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
