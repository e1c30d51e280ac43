package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// CheckReport is what CheckFile found.
type CheckReport struct {
	Path     string
	Schema   int              // 0 if unreadable
	Jobs     map[JobState]int // readable jobs per state
	Problems []string         // empty: the file is sound
}

// maxProblems bounds the problems a report lists.
const maxProblems = 100

func (r *CheckReport) add(format string, a ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
	}
}

// CheckFile checks the store file at path without changing it: the file's
// length against its meta page, bbolt's consistency check, every record and
// the package's index invariants. Damage is listed in the report; the error
// is for a file that could not be checked at all: missing, or ErrLocked while
// a daemon holds it (after timeout).
func CheckFile(path string, timeout time.Duration) (CheckReport, error) {
	rep := CheckReport{Path: path, Jobs: map[JobState]int{}}
	lock, err := lockShared(path, timeout)
	if err != nil {
		return rep, fmt.Errorf("check %s: %w", path, err)
	}
	defer lock.Close()
	// bbolt's check runs in a goroutine of its own, where a fault on a page
	// past the end of the file (or a wild page address) would crash this
	// process: it runs only when the length is right and a guarded walk of
	// every page went through.
	safe := true
	if err := preflight(path); err != nil {
		rep.add("%s", damage(err))
		safe = false
	}
	db, err := openReadOnly(path, timeout)
	if err != nil {
		rep.add("bbolt cannot open the file: %s", damage(err))
		return rep, nil
	}
	defer db.Close()
	if err := guard(path, "read", func() error { return walkAll(db) }); err != nil {
		rep.add("reading every page: %s", damage(err))
		safe = false
	}
	r := readReadable(path, db)
	for _, p := range r.problems {
		rep.add("%s", p)
	}
	for _, j := range r.jobs {
		rep.Jobs[j.State]++
	}
	rep.Schema = r.schema
	if !safe {
		return rep, nil
	}
	_ = guard(path, "check", func() error {
		return db.View(func(tx *bbolt.Tx) error {
			for err := range tx.Check() {
				rep.add("bbolt: %v", err)
			}
			if t, err := newTxn(tx); err != nil {
				rep.add("%v", err)
			} else {
				for _, err := range t.checkIndexes() {
					rep.add("index: %v", err)
				}
			}
			return nil
		})
	})
	return rep, nil
}

// SalvageReport is what Salvage did.
type SalvageReport struct {
	Path    string           // the fresh store, at the original path
	Damaged string           // where the damaged file was moved
	Jobs    map[JobState]int // jobs written to the fresh store, per state
	Results int              // results written
	// FromPageScan counts jobs bbolt could not reach (a damaged page on the
	// way) that the page scan found; if their own page was damaged, an
	// older copy on a freed page may stand in, with an older state.
	FromPageScan int
	// ResultsLost lists completed jobs whose result could not be read; they
	// are stored as failed, saying so.
	ResultsLost []string
	Skipped     int // job records that did not decode
	Batches     int // batch records copied
	Files       int // file records copied (their contents are files beside the store)
	// Problems lists what could not be read (at most 100).
	Problems []string
}

// Salvage copies every readable job and result of the store file at path
// into a fresh file, then moves the damaged file to PATH.damaged-TIMESTAMP
// and puts the fresh one in its place. It reads the file through bbolt where
// it can, and also scans every page for records (a damaged branch page hides
// the leaves under it from bbolt). A job found several times keeps its most
// advanced state; running jobs stay running, so the next Open requeues them.
// Returns ErrLocked while a daemon holds the file (after timeout).
func Salvage(path string, now time.Time, timeout time.Duration) (SalvageReport, error) {
	rep := SalvageReport{Path: path, Jobs: map[JobState]int{}}
	lock, err := lockShared(path, timeout)
	if err != nil {
		return rep, fmt.Errorf("salvage %s: %w", path, err)
	}
	defer lock.Close()

	var r readable
	if db, err := openReadOnly(path, timeout); err == nil {
		r = readReadable(path, db)
		_ = db.Close()
	}
	meta, _, ok, _ := readMetas(path)
	pageSize := os.Getpagesize()
	if ok && meta.pageSize >= 512 && meta.pageSize <= 1<<20 {
		pageSize = int(meta.pageSize)
	}
	pairs, err := rawScan(path, pageSize)
	if err != nil {
		return rep, fmt.Errorf("salvage %s: scan: %w", path, err)
	}
	jobs, results := mergeSalvaged(r, pairs, &rep)
	rep.Skipped = r.skipped
	rep.Problems = r.problems[:min(len(r.problems), maxProblems)]

	fresh := path + ".salvage"
	if err := os.Remove(fresh); err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, fmt.Errorf("salvage %s: %w", path, err)
	}
	if err := writeSalvaged(fresh, jobs, results, r, &rep); err != nil {
		_ = os.Remove(fresh)
		return rep, fmt.Errorf("salvage %s: write %s: %w", path, fresh, err)
	}
	rep.Damaged, err = keepDamaged(path, now)
	if err != nil {
		return rep, fmt.Errorf("salvage %s: keep the damaged file: %w", path, err)
	}
	// One rename replaces the damaged file: at no moment is there no store
	// at path (a daemon starting then would make an empty one).
	if err := os.Rename(fresh, path); err != nil {
		return rep, fmt.Errorf("salvage %s: put the fresh file in place (it is at %s; the damaged one is also at %s): %w",
			path, fresh, rep.Damaged, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return rep, nil
}

// keepDamaged links path under a new name, PATH.damaged-TIMESTAMP (with
// -2, -3, … if that exists: an earlier recovery's backup is never
// replaced), and returns it. The file stays at path too, until the fresh
// one replaces it.
func keepDamaged(path string, now time.Time) (string, error) {
	base := fmt.Sprintf("%s.damaged-%s", path, now.UTC().Format("20060102T150405Z"))
	for n := 1; n < 1000; n++ {
		name := base
		if n > 1 {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		err := os.Link(path, name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s-2 … -999 all exist", base)
}

// readable is what bbolt could read of a damaged file.
type readable struct {
	schema       int
	jobs         map[string]Job
	results      map[string][]byte
	learned      map[string][]byte
	side         map[string]*tree // sideBuckets by name
	skipped      int              // job records that did not decode
	jobsComplete bool             // the walk of the jobs bucket read it to the end
	problems     []string
}

// readReadable reads each bucket under its own guard, so that a damaged page
// in one loses only the rest of that bucket.
func readReadable(path string, db *bbolt.DB) readable {
	r := readable{jobs: map[string]Job{}, results: map[string][]byte{}, learned: map[string][]byte{}, side: map[string]*tree{}}
	read := func(what string, fn func(tx *bbolt.Tx) error) bool {
		err := guard(path, "read "+what, func() error { return db.View(fn) })
		if err != nil {
			r.problems = append(r.problems, fmt.Sprintf("reading %s: %s", what, damage(err)))
		}
		return err == nil
	}
	read("schema version", func(tx *bbolt.Tx) (err error) { r.schema, err = schemaVersion(tx); return err })
	r.jobsComplete = read("jobs", func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		if b == nil {
			return fmt.Errorf("no %s bucket", bucketJobs)
		}
		return b.ForEach(func(k, v []byte) error {
			j, err := decodeJob(k, v)
			if err != nil {
				r.problems = append(r.problems, err.Error())
				r.skipped++
				return nil
			}
			r.jobs[j.ID] = j
			return nil
		})
	})
	r.readSide(path, db)
	read("results", func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketResults)
		if b == nil {
			return fmt.Errorf("no %s bucket", bucketResults)
		}
		return b.ForEach(func(k, v []byte) error {
			r.results[string(k)] = append([]byte{}, v...)
			return nil
		})
	})
	read("learned VRAM", func(tx *bbolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil && m.Bucket(bucketLearnedVRAM) != nil {
			return m.Bucket(bucketLearnedVRAM).ForEach(func(k, v []byte) error {
				if len(v) == 8 && validModel(string(k)) {
					r.learned[string(k)] = append([]byte(nil), v...)
				}
				return nil
			})
		}
		return nil
	})
	return r
}

// stateRank orders states by how far a job got: a copy of a job with a
// higher rank is newer.
func stateRank(s JobState) int {
	switch s {
	case JobStateQueued:
		return 1
	case JobStateRunning:
		return 2
	}
	return 3
}

// newer reports whether a is a later copy of a job than b.
func newer(a, b Job) bool {
	if ra, rb := stateRank(a.State), stateRank(b.State); ra != rb {
		return ra > rb
	}
	if !a.FinishedAt.Equal(b.FinishedAt) {
		return a.FinishedAt.After(b.FinishedAt)
	}
	if a.Attempts != b.Attempts {
		return a.Attempts > b.Attempts
	}
	return a.StartedAt.After(b.StartedAt)
}

// mergeSalvaged picks the jobs and results to keep: what bbolt read wins;
// pairs from the page scan fill in jobs bbolt could not reach (only when the
// jobs bucket could not be read to its end: otherwise a job on a freed page
// was deleted on purpose) and results of completed jobs.
func mergeSalvaged(r readable, pairs []rawPair, rep *SalvageReport) (map[string]Job, map[string][]byte) {
	jobs := map[string]Job{}
	for id, j := range r.jobs {
		jobs[id] = j
	}
	found := map[string]Job{}
	var other []rawPair
	for _, p := range pairs {
		if !ValidID(string(p.key)) {
			continue
		}
		if j, err := decodeJob(p.key, p.value); err == nil {
			if old, ok := found[j.ID]; !ok || newer(j, old) {
				found[j.ID] = j
			}
			continue
		}
		other = append(other, p)
	}
	if !r.jobsComplete {
		for id, j := range found {
			if _, ok := jobs[id]; !ok {
				jobs[id] = j
				rep.FromPageScan++
			}
		}
	}
	results := map[string][]byte{}
	for id, v := range r.results {
		if j, ok := jobs[id]; ok && j.State == JobStateCompleted {
			results[id] = v
		}
	}
	for _, p := range other {
		id := string(p.key)
		j, ok := jobs[id]
		if !ok || j.State != JobStateCompleted || string(p.value) == j.Model {
			continue // not a result (a running-index entry holds the model)
		}
		if _, have := results[id]; !have {
			results[id] = p.value
		}
	}
	for id, j := range jobs {
		if j.State == JobStateCompleted {
			if _, ok := results[id]; !ok {
				j.State = JobStateFailed
				j.Error = "result lost: the store file was damaged (vramcram store recover)"
				jobs[id] = j
				rep.ResultsLost = append(rep.ResultsLost, id)
			}
		}
	}
	slices.Sort(rep.ResultsLost)
	return jobs, results
}

// writeSalvaged writes jobs, results, and r's learned figures and side
// buckets into a new store file, rebuilding the indexes, and checks it.
func writeSalvaged(path string, jobs map[string]Job, results map[string][]byte, r readable, rep *SalvageReport) error {
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	list := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, j)
	}
	slices.SortFunc(list, func(a, b Job) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID)) })
	err = s.write(context.Background(), func(t *txn) (func() error, error) {
		return func() error {
			var maxSeq uint64
			used := map[uint64]bool{}
			for _, j := range list {
				maxSeq = max(maxSeq, j.Seq)
			}
			for _, j := range list {
				if used[j.Seq] { // two records claim one place: give the later a new one
					maxSeq++
					j.Seq = maxSeq
				}
				used[j.Seq] = true
				if err := t.order.Put(seqKey(j.Seq), []byte(j.ID)); err != nil {
					return err
				}
				if err := t.transition(&j, ""); err != nil {
					return err
				}
				if res, ok := results[j.ID]; ok {
					if err := t.results.Put([]byte(j.ID), res); err != nil {
						return err
					}
					rep.Results++
				}
				rep.Jobs[j.State]++
			}
			if err := t.jobs.SetSequence(maxSeq); err != nil {
				return err
			}
			for k, v := range r.learned {
				if err := t.meta.Bucket(bucketLearnedVRAM).Put([]byte(k), v); err != nil {
					return err
				}
			}
			for name, side := range r.side {
				if err := writeTree(t.tx, nil, name, side); err != nil {
					return err
				}
			}
			rep.Batches = r.side[string(bucketBatches)].count()
			rep.Files = r.side[string(bucketFiles)].count()
			return nil
		}, nil
	})
	if err == nil {
		err = s.Check()
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// openReadOnly opens path read-only under guard.
func openReadOnly(path string, timeout time.Duration) (*bbolt.DB, error) {
	var db *bbolt.DB
	err := guard(path, "open", func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, ErrLocked
	}
	return db, err
}

// walkAll reads every key and value of every bucket.
func walkAll(db *bbolt.DB) error {
	return db.View(func(tx *bbolt.Tx) error {
		var walk func(b *bbolt.Bucket)
		walk = func(b *bbolt.Bucket) {
			_ = b.ForEach(func(k, v []byte) error {
				if v == nil {
					if child := b.Bucket(k); child != nil {
						walk(child)
					}
				}
				return nil
			})
		}
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error {
			walk(b)
			return nil
		})
	})
}

// lockShared takes a shared flock on path, as a bbolt reader does, so that a
// running daemon (which holds it exclusively) is detected: ErrLocked after
// timeout.
func lockShared(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: stop the daemon first", ErrLocked)
			}
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
