package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/bbolt"
)

// TestCommit_Batch drives commit directly with a batch that mixes successes,
// a logical error, an apply error and a panic.
func TestCommit_Batch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	errLogical := errors.New("logical")
	put := func(key string) txOp {
		return func(tx *txn) (func() error, error) {
			return func() error { return tx.meta.Put([]byte(key), []byte("v")) }, nil
		}
	}
	runs := map[string]int{}
	counted := func(name string, op txOp) txOp {
		return func(tx *txn) (func() error, error) {
			runs[name]++
			return op(tx)
		}
	}
	ops := []struct {
		name    string
		op      txOp
		wantErr string // "" = success
	}{
		{"ok1", counted("ok1", put("t-ok1")), ""},
		{"logical", counted("logical", func(*txn) (func() error, error) { return nil, errLogical }), "logical"},
		{"applyErr", counted("applyErr", func(tx *txn) (func() error, error) {
			return func() error {
				_ = tx.meta.Put([]byte("t-applyErr"), []byte("half"))
				return errors.New("disk says no")
			}, nil
		}), "disk says no"},
		{"sees-ok1", counted("sees-ok1", func(tx *txn) (func() error, error) {
			if tx.meta.Get([]byte("t-ok1")) == nil {
				return nil, errors.New("earlier write in the batch not visible")
			}
			return put("t-sees")(tx)
		}), ""},
		{"panic", counted("panic", func(tx *txn) (func() error, error) {
			return func() error {
				_ = tx.meta.Put([]byte("t-panic"), []byte("half"))
				panic("bug")
			}, nil
		}), "bbolt panicked: bug"},
		{"ok2", counted("ok2", put("t-ok2")), ""},
	}
	batch := make([]*writeReq, len(ops))
	for i, o := range ops {
		batch[i] = &writeReq{op: o.op, errCh: make(chan error, 1)}
	}
	before := tb.s.commits.Load()
	tb.s.commit(batch)
	for i, o := range ops {
		err := <-batch[i].errCh
		switch {
		case o.wantErr == "" && err != nil:
			t.Errorf("%s: %v", o.name, err)
		case o.wantErr != "" && (err == nil || !strings.Contains(err.Error(), o.wantErr)):
			t.Errorf("%s: err %v, want %q", o.name, err, o.wantErr)
		}
	}
	if n := tb.s.commits.Load() - before; n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
	// applyErr and then panic each stopped the transaction, which was rolled
	// back and run again without them.
	wantRuns := map[string]int{"ok1": 3, "logical": 3, "applyErr": 1, "sees-ok1": 2, "panic": 1, "ok2": 1}
	if !maps.Equal(runs, wantRuns) {
		t.Errorf("runs %v, want %v", runs, wantRuns)
	}
	err := tb.s.db.View(func(tx *bbolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		for key, want := range map[string]bool{"t-ok1": true, "t-sees": true, "t-ok2": true, "t-applyErr": false, "t-panic": false} {
			if got := m.Get([]byte(key)) != nil; got != want {
				t.Errorf("key %s present %t, want %t", key, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The committer still works.
	tb.enqueue(t, "m", 0)
}

// TestStore_GroupCommit checks that concurrent writers share commits: while
// the committer is held inside a transaction, 50 callers queue up, and the
// next commit answers them all. synctest.Wait tells when they all wait.
func TestStore_GroupCommit(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "group.db")
	synctest.Test(t, func(t *testing.T) {
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		hold := make(chan struct{})
		go func() {
			_ = s.write(context.Background(), func(*txn) (func() error, error) {
				<-hold
				return nil, nil
			})
		}()
		synctest.Wait() // the committer holds the op
		before := s.commits.Load()
		const n = 50
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				j := Job{ID: fmt.Sprintf("j%d", i), Model: "m"}
				if err := s.Enqueue(context.Background(), &j); err != nil {
					t.Error(err)
				}
			})
		}
		synctest.Wait() // every caller waits to be accepted
		close(hold)
		wg.Wait()
		if commits := s.commits.Load() - before; commits != 2 {
			t.Errorf("%d commits for the held op and %d concurrent enqueues, want 2", commits, n)
		}
		if d, _ := s.Depths(); d["m"] != n {
			t.Fatalf("depths %v", d)
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStore_CloseWaitsForAccepted: requests the committer took are committed
// and answered; the rest get ErrClosed and wrote nothing; nobody hangs.
func TestStore_CloseWaitsForAccepted(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "close.db")
	synctest.Test(t, func(t *testing.T) {
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		hold := make(chan struct{})
		heldErr := make(chan error, 1)
		go func() {
			heldErr <- s.write(context.Background(), func(t *txn) (func() error, error) {
				<-hold
				return func() error { return t.meta.Put([]byte("held"), []byte("1")) }, nil
			})
		}()
		synctest.Wait() // the committer holds the op
		results := make([]error, 20)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				results[i] = s.Enqueue(context.Background(), &Job{ID: fmt.Sprintf("late%d", i), Model: "m"})
			})
		}
		synctest.Wait() // they wait to be accepted
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		synctest.Wait() // Close waits for the committer; the callers got ErrClosed
		wg.Wait()
		for i, err := range results {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("late%d: %v, want ErrClosed", i, err)
			}
		}
		close(hold)
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if err := <-heldErr; err != nil {
			t.Fatalf("accepted op: %v", err)
		}
	})
	s := openTest(t, path, Options{NoSync: true})
	if d, _ := s.Depths(); len(d) != 0 {
		t.Fatalf("refused enqueues stored: %v", d)
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("held")) == nil {
			return errors.New("the accepted op was not committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStore_GroupCommitMerges: 64 callers that each write again as soon as
// they are answered share every commit, instead of splitting into two
// groups that take turns (one commits while the other queues). Each
// operation takes 100µs of the synctest clock, so a commit takes time.
func TestStore_GroupCommitMerges(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "merge.db")
	synctest.Test(t, func(t *testing.T) {
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const callers, rounds = 64, 20
		op := func(*txn) (func() error, error) {
			time.Sleep(100 * time.Microsecond)
			return nil, nil
		}
		before := s.commits.Load()
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range rounds {
					if err := s.write(context.Background(), op); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		commits := s.commits.Load() - before
		t.Logf("%d writes in %d commits: %.1f per commit", callers*rounds, commits, float64(callers*rounds)/float64(commits))
		if commits > rounds+3 { // the first rounds may start before every caller came
			t.Errorf("%d commits for %d callers writing %d times each, want at most %d", commits, callers, rounds, rounds+3)
		}
	})
}

// TestStore_GroupCommitGathersSpreadCallers: callers whose writes come in
// spread over more than a commit's duration (a busy CPU answers one after
// the other), each soon after the one before, still share one commit per
// round: the committer waits as long as they keep coming. Each operation
// takes 20µs of the synctest clock (a round of 64 commits in 1.28ms); caller
// i writes i×40µs after its answer, so a round arrives over 2.5ms, each
// caller 40µs after the one before.
func TestStore_GroupCommitGathersSpreadCallers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spread.db")
	synctest.Test(t, func(t *testing.T) {
		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		const callers, rounds = 64, 20
		op := func(*txn) (func() error, error) {
			time.Sleep(20 * time.Microsecond)
			return nil, nil
		}
		before := s.commits.Load()
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				for range rounds {
					time.Sleep(time.Duration(i) * 40 * time.Microsecond)
					if err := s.write(context.Background(), op); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		commits := s.commits.Load() - before
		t.Logf("%d writes in %d commits: %.1f per commit", callers*rounds, commits, float64(callers*rounds)/float64(commits))
		// The first rounds learn how many callers there are, the last ones
		// lose the callers that are done: 29 commits, where the rounds split
		// into batches of a few callers (over 200 commits) without the wait.
		if commits > 2*rounds {
			t.Errorf("%d commits for %d callers writing %d times each, want at most %d", commits, callers, rounds, 2*rounds)
		}
	})
}
