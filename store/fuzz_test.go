package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FuzzDecodeJob feeds arbitrary bytes as a stored job record: decodeJob must
// return a job that round-trips or an ErrCorrupt error, and no read, write or
// Open recovery that meets the record may panic.
func FuzzDecodeJob(f *testing.F) {
	const id = "fuzzjob"
	valid := Job{
		ID: id, Model: "m", Type: "llm", Prompt: "hi", Params: json.RawMessage(`{"n":1}`),
		State: JobStateRunning, Attempts: 1, MaxAttempts: 3, Seq: 1,
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	b, _ := json.Marshal(valid)
	f.Add(b)
	for _, st := range JobStates() {
		v := valid
		v.State = st
		b, _ := json.Marshal(v)
		f.Add(b)
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"id":"fuzzjob"`, "\xff\xfe",
		`{"id":"fuzzjob","model":"m","state":"queued","max_attempts":1,"seq":1,"priority":101}`,
		`{"id":"fuzzjob","model":"m","state":"queued","max_attempts":1,"seq":1,"priority":-101}`,
		`{"id":"fuzzjob","model":"m","state":"running","max_attempts":1,"seq":1,"attempts":-1}`,
		`{"id":"fuzzjob","model":"m","state":"running","max_attempts":1,"seq":18446744073709551615}`,
		`{"id":"fuzzjob","model":"other","state":"running","max_attempts":2,"seq":1,"attempts":9}`,
		`{"id":"fuzzjob","model":"m","state":"queued","max_attempts":1,"seq":2,"created_at":"2026-01-01T00:00:00+05:00"}`,
		`{"id":"fuzzjob","model":"m","state":"queued","max_attempts":1,"seq":1,"created_at":"yesterday"}`,
		`{"id":"fuzzjob","model":"m","state":"queued","max_attempts":1,"seq":1,"params":[1,2,{"a":null}]}`,
		`{"id":"FUZZJOB","model":"m","state":"done","max_attempts":0,"seq":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := decodeJob([]byte(id), data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error not ErrCorrupt: %v", err)
			}
		} else {
			enc, err := encodeJob(&j)
			if err != nil {
				t.Fatalf("decoded job does not encode: %v", err)
			}
			j2, err := decodeJob([]byte(id), enc)
			if err != nil {
				t.Fatalf("re-encoded job does not decode: %v", err)
			}
			enc2, _ := encodeJob(&j2)
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("round trip changed the job:\n%s\n%s", enc, enc2)
			}
		}
		// The record as a running job (recovery on reopen) and as a queued
		// job (reads and writes that meet it).
		for _, claimed := range []bool{true, false} {
			fuzzStore(t, id, data, claimed)
		}
	})
}

// fuzzTemplates holds two small store files, made once per process, whose
// job "fuzzjob" (ahead of "neighbour" in model m's queue) is running
// ([1]) or queued ([0]). Copying one is much cheaper than making a store.
var fuzzTemplates struct {
	once sync.Once
	db   [2][]byte
	err  error
}

func fuzzTemplate(id string, claimed bool) ([]byte, error) {
	fuzzTemplates.once.Do(func() {
		dir, err := os.MkdirTemp("", "storefuzz")
		if err != nil {
			fuzzTemplates.err = err
			return
		}
		defer os.RemoveAll(dir)
		for i := range 2 {
			path := filepath.Join(dir, fmt.Sprintf("t%d.db", i))
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				fuzzTemplates.err = err
				return
			}
			for _, jid := range []string{id, "neighbour"} {
				if err := s.Enqueue(context.Background(), &Job{ID: jid, Model: "m"}); err != nil {
					fuzzTemplates.err = err
				}
			}
			if i == 1 {
				if _, err := s.Claim("m"); err != nil {
					fuzzTemplates.err = err
				}
			}
			if err := s.Close(); err != nil {
				fuzzTemplates.err = err
			}
			if fuzzTemplates.db[i], err = os.ReadFile(path); err != nil {
				fuzzTemplates.err = err
			}
		}
	})
	i := 0
	if claimed {
		i = 1
	}
	return fuzzTemplates.db[i], fuzzTemplates.err
}

func fuzzStore(t *testing.T, id string, data []byte, claimed bool) {
	tmpl, err := fuzzTemplate(id, claimed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fuzz.db")
	if err := os.WriteFile(path, tmpl, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, s, bucketJobs, id, data)
	exerciseStore(s, id)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{NoSync: true})
	if err != nil {
		return // recovery refused the record: fine, as long as it did not panic
	}
	exerciseStore(s, id)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// exerciseStore calls everything that may meet the record; errors are fine.
func exerciseStore(s *Store, id string) {
	_, _ = s.Get(id)
	_, _ = s.List(ListFilter{})
	_, _ = s.List(ListFilter{Model: "m", Limit: 1})
	_, _ = s.List(ListFilter{State: JobStateQueued})
	_, _ = s.List(ListFilter{State: JobStateRunning})
	_, _ = s.Running()
	_, _ = s.Heads()
	_, _ = s.Depths()
	_, _ = s.Position(id)
	_, _ = s.Result(id)
	_ = s.Check()
	_, _ = s.Claim("m")
	_ = s.Complete(id, []byte("r"))
	_, _ = s.Requeue(id, "x")
	_ = s.Release(id)
	_, _ = s.Cancel(id)
	_ = s.Fail(id, "x")
	_, _ = s.Cleanup(time.Now().Add(time.Hour))
}
