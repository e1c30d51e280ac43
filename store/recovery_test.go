package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestStore_Reopen(t *testing.T) {
	t.Parallel()

	t.Run("JobsPersist", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		q := tb.enqueue(t, "a", 3)
		done := tb.makeJob(t, JobStateCompleted)
		failed := tb.makeJob(t, JobStateFailed)
		if err := tb.s.SetLearnedVRAM("a", 4096); err != nil {
			t.Fatal(err)
		}
		if err := tb.s.Close(); err != nil {
			t.Fatal(err)
		}
		s := openTest(t, tb.path, Options{NoSync: true})
		if s.Recovered() != 0 || s.RecoveredFailed() != 0 {
			t.Fatalf("recovered %d/%d from a clean close", s.Recovered(), s.RecoveredFailed())
		}
		for _, want := range []Job{q, done, failed} {
			got, err := s.Get(want.ID)
			if err != nil || got.State != want.State || got.Seq != want.Seq {
				t.Fatalf("after reopen %s: %+v, %v", want.ID, got, err)
			}
		}
		if res, err := s.Result(done.ID); err != nil || string(res) != "out" {
			t.Fatalf("result after reopen: %q, %v", res, err)
		}
		if v, _ := s.LearnedVRAM(); v["a"] != 4096 {
			t.Fatalf("learned vram after reopen: %v", v)
		}
		// Seq keeps growing: nothing reuses an old position.
		j := Job{ID: "new", Model: "a"}
		if err := s.Enqueue(context.Background(), &j); err != nil || j.Seq <= failed.Seq {
			t.Fatalf("enqueue after reopen: seq %d, %v", j.Seq, err)
		}
	})

	t.Run("RunningRequeuedInPlace", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		first := tb.enqueue(t, "m", 0)
		tb.claim(t, "m")
		second := tb.enqueue(t, "m", 0) // arrived after first was claimed
		urgent := tb.enqueue(t, "m", 9)
		if err := tb.s.Close(); err != nil { // the running job stays running on disk
			t.Fatal(err)
		}
		s := openTest(t, tb.path, Options{NoSync: true})
		if s.Recovered() != 1 || s.RecoveredFailed() != 0 {
			t.Fatalf("recovered %d, failed %d", s.Recovered(), s.RecoveredFailed())
		}
		got, err := s.Get(first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != JobStateQueued || got.Attempts != 1 || !got.StartedAt.IsZero() ||
			got.Error != "interrupted: daemon restarted during attempt 1" {
			t.Fatalf("recovered job: %+v", got)
		}
		var order []string
		for range 3 {
			j, err := s.Claim("m")
			if err != nil {
				t.Fatal(err)
			}
			order = append(order, j.ID)
		}
		if want := []string{urgent.ID, first.ID, second.ID}; strings.Join(order, ",") != strings.Join(want, ",") {
			t.Fatalf("claim order after recovery %v, want %v", order, want)
		}
		if r, _ := s.Running(); len(r) != 3 {
			t.Fatalf("running %v", ids(r))
		}
	})

	t.Run("AttemptsExhausted", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		j := Job{ID: "fragile", Model: "m", MaxAttempts: 2}
		if err := tb.s.Enqueue(context.Background(), &j); err != nil {
			t.Fatal(err)
		}
		path := tb.path
		s := tb.s
		for attempt := 1; attempt <= 2; attempt++ {
			if c, err := s.Claim("m"); err != nil || c.Attempts != attempt {
				t.Fatalf("claim %d: %+v, %v", attempt, c, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, path, Options{NoSync: true})
		}
		if s.Recovered() != 0 || s.RecoveredFailed() != 1 {
			t.Fatalf("recovered %d, failed %d", s.Recovered(), s.RecoveredFailed())
		}
		got, err := s.Get("fragile")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != JobStateFailed || got.Error != "interrupted: daemon restarted after 2 attempts" || got.FinishedAt.IsZero() {
			t.Fatalf("after last restart: %+v", got)
		}
		if d, _ := s.Depths(); len(d) != 0 {
			t.Fatalf("depths %v", d)
		}
	})

	t.Run("CorruptRunningRecord", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		j := tb.makeJob(t, JobStateRunning)
		putRaw(t, tb.s, bucketJobs, j.ID, []byte(`{"id":"`+j.ID+`","state":"running"`))
		if err := tb.s.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := Open(tb.path, Options{NoSync: true})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open with a corrupt running job: %v, want ErrCorrupt", err)
		}
	})
}

// putRaw writes a raw value behind the store's back.
func putRaw(t testing.TB, s *Store, bucket []byte, key string, val []byte) {
	t.Helper()
	if err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(key), val)
	}); err != nil {
		t.Fatal(err)
	}
}

// The crash test: a child process (this test binary, re-executed with
// crashChildEnv set) enqueues, claims and completes jobs with fsync on and
// prints each ID only after the call returned. The parent kills it with
// SIGKILL at a random moment, reopens the file and checks that nothing
// acknowledged is lost.

const crashChildEnv = "VRAMCRAM_STORE_CRASH_CHILD"

func crashChild(path string) {
	s, err := Open(path, Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("R ready")
	out := func(kind, id string) { fmt.Fprintf(os.Stdout, "%s %s\n", kind, id) } // one write each
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				j := Job{ID: NewID(), Model: "m", Prompt: strings.Repeat("p", 100), MaxAttempts: 100}
				if err := s.Enqueue(context.Background(), &j); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				out("E", j.ID)
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				j, err := s.Claim("m")
				if errors.Is(err, ErrEmpty) {
					continue
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				out("C", j.ID)
				if (i+w)%3 == 0 { // leave some running
					continue
				}
				if err := s.Complete(j.ID, []byte("result of "+j.ID)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				out("D", j.ID)
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

func TestStore_Crash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	enqueued := map[string]bool{}
	completed := map[string]bool{}
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(stdout)
		if line, err := r.ReadString('\n'); err != nil || line != "R ready\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child did not start: %q, %v; stderr: %s", line, err, stderr.String())
		}
		// The random moment: after the k-th acknowledgement, with the child
		// running on while the parent reacts.
		k := 1 + rand.IntN(300)
		var lines []string
		reached := make(chan struct{})
		readDone := make(chan error, 1)
		go func() {
			for {
				line, err := r.ReadString('\n')
				if err != nil { // a last line without '\n' was never acknowledged
					if err == io.EOF {
						err = nil
					}
					readDone <- err
					return
				}
				lines = append(lines, strings.TrimSuffix(line, "\n"))
				if len(lines) == k {
					close(reached)
				}
			}
		}()
		select {
		case <-reached:
		case err := <-readDone:
			t.Fatalf("child stopped early: %v; stderr: %s", err, stderr.String())
		case <-time.After(20 * time.Second):
			t.Fatalf("child made no progress; stderr: %s", stderr.String())
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-readDone; err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait() // killed
		if stderr.Len() > 0 {
			t.Fatalf("child stderr: %s", stderr.String())
		}
		running := 0
		for _, l := range lines {
			kind, id, _ := strings.Cut(l, " ")
			switch kind {
			case "E":
				enqueued[id] = true
			case "C":
				running++
			case "D":
				completed[id] = true
			default:
				t.Fatalf("child said %q", l)
			}
		}

		s, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Errorf("round %d: check: %v", round, err)
		}
		lost := 0
		for id := range enqueued {
			j, err := s.Get(id)
			if err != nil {
				lost++
				t.Errorf("round %d: acknowledged job %s: %v", round, id, err)
				continue
			}
			if completed[id] && j.State != JobStateCompleted {
				t.Errorf("round %d: job %s reported completed, is %s", round, id, j.State)
			}
			if j.State == JobStateRunning {
				t.Errorf("round %d: job %s still running after recovery", round, id)
			}
		}
		for id := range completed {
			if res, err := s.Result(id); err != nil || string(res) != "result of "+id {
				t.Errorf("round %d: result of %s: %q, %v", round, id, res, err)
			}
		}
		t.Logf("round %d: %d lines, %d enqueued so far (%d lost), %d completed, %d requeued at open",
			round, len(lines), len(enqueued), lost, len(completed), s.Recovered())
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
	if len(enqueued) == 0 || len(completed) == 0 {
		t.Fatalf("the child acknowledged %d enqueues, %d completions: nothing tested", len(enqueued), len(completed))
	}
}

// TestStore_CheckDetects makes sure Check's own invariants are not vacuous.
func TestStore_CheckDetects(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		corrupt func(t *testing.T, s *Store, queued, done Job)
		want    string
	}{
		"StrayQueueEntry": {func(t *testing.T, s *Store, _, done Job) {
			if err := s.db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketQueues).Bucket([]byte("m")).Put(queueKey(0, done.Seq), []byte(done.ID))
			}); err != nil {
				t.Fatal(err)
			}
		}, "no such queued job"},
		"MissingQueueEntry": {func(t *testing.T, s *Store, queued, _ Job) {
			if err := s.db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketQueues).Bucket([]byte("m")).Delete(queueKey(queued.Priority, queued.Seq))
			}); err != nil {
				t.Fatal(err)
			}
		}, "in queue index: false"},
		"Counter": {func(t *testing.T, s *Store, _, _ Job) {
			putRaw(t, s, bucketMeta, string(keyQueued), u64(7))
		}, "queued counter 7"},
		"StateWithoutIndex": {func(t *testing.T, s *Store, _, done Job) {
			done.State = JobStateRunning
			b, _ := json.Marshal(done)
			putRaw(t, s, bucketJobs, done.ID, b)
		}, "in running index: false"},
		"Undecodable": {func(t *testing.T, s *Store, _, done Job) {
			putRaw(t, s, bucketJobs, done.ID, []byte("{"))
		}, "corrupt store record"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			queued := Job{ID: "queued", Model: "m"}
			done := Job{ID: "done", Model: "m"}
			for _, j := range []*Job{&done, &queued} {
				if err := s.Enqueue(context.Background(), j); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Claim("m"); err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(done.ID, nil); err != nil {
				t.Fatal(err)
			}
			if done, err = s.Get(done.ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Check(); err != nil {
				t.Fatalf("check before corruption: %v", err)
			}
			tt.corrupt(t, s, queued, done)
			err = s.Check()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("check: %v, want %q", err, tt.want)
			}
		})
	}
}
