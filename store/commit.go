package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// maxBatch caps how many operations share one bbolt transaction.
const maxBatch = 256

// txOp is one write operation, split in two phases so that an operation that
// fails has written nothing:
//
//   - The check phase (the txOp itself) only reads. It returns a logical error
//     (ErrNotFound, ErrStateConflict, ErrQueueFull, ...) or an apply func.
//   - apply mutates. Any error it returns, like a panic in either phase, may
//     leave the transaction half-written, so the committer rolls the whole
//     transaction back (see commit).
//
// The check phase sees the writes of the operations before it in the same
// transaction, so a batch behaves exactly like its operations run one by one.
type txOp func(t *txn) (apply func() error, err error)

type writeReq struct {
	op    txOp
	errCh chan error // buffered 1: the committer never blocks on a reply
}

// write hands op to the committer and waits for its result. ctx only bounds
// the wait to be accepted: once accepted, the operation's outcome is final, so
// write waits for it (one commit) whatever ctx does. Returns ErrClosed after
// Close.
func (s *Store) write(ctx context.Context, op txOp) error {
	if s.closed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{op: op, errCh: make(chan error, 1)}
	select {
	case s.reqCh <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closingCh:
		return ErrClosed
	}
	return <-r.errCh
}

// loop is the committer goroutine: it takes the first request, drains
// whatever else is already waiting (up to maxBatch) and commits them all in
// one transaction, so a lone caller waits for one commit and concurrent
// callers share commits. It exits once Close is called; requests it already
// took are committed and answered first.
//
// Concurrent callers would otherwise split in two groups that take turns:
// those answered by a commit come back while the next one, holding the
// callers that queued meanwhile, syncs. So the loop remembers how many
// callers the last round showed (its batch and those that queued during
// its commit) and, when a round starts with fewer, waits for the rest while
// they keep coming, each within the last commit's duration of the one
// before (maxGather in all): a round that waits w for n callers costs
// commit+w instead of two commits. A lone caller never waits.
func (s *Store) loop() {
	defer close(s.doneCh)
	batch := make([]*writeReq, 0, maxBatch)
	var g groupWindow
	for {
		select {
		case <-s.closingCh:
			return
		default:
		}
		queued := false // did a caller queue during the last commit?
		select {
		case r := <-s.reqCh:
			batch, queued = append(batch[:0], r), true
		default:
			select {
			case r := <-s.reqCh:
				batch = append(batch[:0], r)
			case <-s.closingCh:
				return
			}
		}
		batch = s.drain(batch)
		if queued {
			g.expect = min(maxBatch, g.last+len(batch))
		}
		batch = s.gather(batch, g)
		start := time.Now()
		s.commit(batch)
		g.took, g.last, g.expect = time.Since(start), len(batch), len(batch)
		clear(batch) // let the requests be collected
	}
}

// groupWindow is what the committer knows of its callers: how many the
// last round showed (expect), the last batch's size and its commit time.
type groupWindow struct {
	expect, last int
	took         time.Duration
}

// maxGather caps the wait for callers, whatever a commit took and however
// steadily they come.
const maxGather = 10 * time.Millisecond

// drain adds the requests already waiting, without blocking.
func (s *Store) drain(batch []*writeReq) []*writeReq {
	for len(batch) < maxBatch {
		select {
		case r := <-s.reqCh:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// gather waits for callers until the batch holds as many as the last round
// showed, or until Close. It gives up once no caller has come for the last
// commit's duration: while callers keep coming (a busy CPU spreads their
// arrivals over more than one commit), it keeps waiting, up to maxGather in
// all, so that they share one commit instead of splitting in two.
func (s *Store) gather(batch []*writeReq, g groupWindow) []*writeReq {
	if len(batch) >= g.expect || g.took <= 0 {
		return batch
	}
	quiet := min(g.took, maxGather)
	deadline := time.Now().Add(maxGather)
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for len(batch) < g.expect {
		select {
		case r := <-s.reqCh:
			batch = append(batch, r)
			timer.Reset(min(quiet, time.Until(deadline)))
		case <-timer.C:
			return batch
		case <-s.closingCh:
			return batch
		}
	}
	return batch
}

// commit runs batch in one bbolt transaction and answers every request.
//
// An operation with a logical error gets that error and the others commit. If
// an operation panics or its apply phase fails, the transaction is rolled
// back, that operation gets the error and the rest run again in a new
// transaction (as bbolt's Batch does). If the commit itself fails, every
// request of the batch gets that error.
func (s *Store) commit(batch []*writeReq) {
	errs := make([]error, len(batch))
	for len(batch) > 0 {
		errs = errs[:len(batch)]
		clear(errs)
		failIdx := -1
		var failErr error
		err := s.update(func(tx *bbolt.Tx) error {
			t, err := newTxn(tx)
			if err != nil {
				return err
			}
			for i, r := range batch {
				logical, fatal := s.runOp(r.op, t)
				if fatal != nil {
					failIdx, failErr = i, fatal
					return fatal
				}
				errs[i] = logical
			}
			return nil
		})
		if failIdx >= 0 {
			batch[failIdx].errCh <- failErr
			batch = slices.Concat(batch[:failIdx], batch[failIdx+1:]) // a copy: the caller's slice stays intact
			continue
		}
		if err != nil {
			err = fmt.Errorf("commit: %w", err)
			for _, r := range batch {
				r.errCh <- err
			}
			return
		}
		s.commits.Add(1)
		for i, r := range batch {
			r.errCh <- errs[i]
		}
		return
	}
}

// update runs fn in one read-write bbolt transaction under guard: a panic or
// a memory fault outside the operations (in newTxn, or in bbolt's spill
// during the commit: a damaged page) becomes ErrCorrupt naming the file,
// instead of killing the daemon. bbolt rolls the transaction back during
// the unwind.
func (s *Store) update(fn func(*bbolt.Tx) error) error {
	return guard(s.path, "write", func() error { return s.db.Update(fn) })
}

// runOp runs both phases of op. logical is the check phase's error (nothing
// written); fatal is an apply error or a panic (the transaction may be dirty).
// An operation only reads and writes bbolt, so a panic in it (bbolt on a
// damaged page, or a fault, which guard in update turns into a panic) is
// reported as ErrCorrupt naming the file.
func (s *Store) runOp(op txOp, t *txn) (logical, fatal error) {
	defer func() {
		if p := recover(); p != nil {
			fatal = corruptError(s.path, fmt.Sprintf("write: bbolt panicked: %v", p))
		}
	}()
	apply, err := op(t)
	if err != nil {
		return err, nil
	}
	if apply != nil {
		if err := apply(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// Commits is the number of bbolt transactions the committer has committed
// (each one syncs the file): jobs per commit is the group commit's yield.
func (s *Store) Commits() uint64 { return s.commits.Load() }
