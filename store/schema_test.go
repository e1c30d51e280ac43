package store

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// copyFile copies src to a new file dst.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// v1Copy copies the checked-in v1 store into a temporary directory.
func v1Copy(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vramcram.db")
	copyFile(t, filepath.Join("testdata", "v1.db"), path)
	return path
}

// fileVersion reads the schema version stamped in a closed store file.
func fileVersion(t testing.TB, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.View(func(tx *bbolt.Tx) (err error) { v, err = schemaVersion(tx); return err }); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrations_Table(t *testing.T) {
	for k, m := range migrations {
		if m.from != k+1 || m.apply == nil || m.what == "" {
			t.Errorf("step %d: from %d, want %d, with apply and what", k, m.from, k+1)
		}
	}
	if SchemaVersion != len(migrations)+1 {
		t.Errorf("SchemaVersion %d with %d steps", SchemaVersion, len(migrations))
	}
}

// TestMigrate_V1File opens the store file written by schema version 1
// (testdata/README.md lists its jobs): it is backed up, migrated, its
// finished jobs and results read back, and its queued jobs (and the one a
// crash left running) can be claimed and completed.
func TestMigrate_V1File(t *testing.T) {
	path := v1Copy(t)
	if v := fileVersion(t, path); v != 1 {
		t.Fatalf("test data has schema %d, want 1", v)
	}
	s := openTest(t, path, Options{NoSync: true})
	m := s.Migrated()
	if m == nil || m.From != 1 || m.To != SchemaVersion || m.Backup != path+".bak-v1" {
		t.Fatalf("migration report %+v, want 1→%d with backup %s.bak-v1", m, SchemaVersion, path)
	}
	if v := fileVersion(t, m.Backup); v != 1 {
		t.Errorf("backup has schema %d, want the original 1", v)
	}

	for id, want := range map[string]string{
		"v1-job-01": `{"type":"llm","text":"hello from v1"}`,
		"v1-job-02": `{"type":"llm","text":"second result"}`,
	} {
		if j, err := s.Get(id); err != nil || j.State != JobStateCompleted {
			t.Errorf("get %s: %+v, %v; want completed", id, j, err)
		}
		if r, err := s.Result(id); err != nil || string(r) != want {
			t.Errorf("result %s: %q, %v; want %q", id, r, err, want)
		}
	}
	if j, err := s.Get("v1-job-03"); err != nil || j.State != JobStateFailed || j.Error != "engine exited: code 1" {
		t.Errorf("failed job: %+v, %v", j, err)
	}
	if j, err := s.Get("v1-job-05"); err != nil || j.State != JobStateCancelled {
		t.Errorf("cancelled job: %+v, %v", j, err)
	}
	if lv, err := s.LearnedVRAM(); err != nil || lv["tiny"] != 1234 {
		t.Errorf("learned vram %v, %v; want tiny 1234", lv, err)
	}
	if s.Recovered() != 1 {
		t.Errorf("recovered %d running jobs, want 1 (v1-job-04)", s.Recovered())
	}

	// The queue order of version 1 holds: the job a crash interrupted goes
	// first (its original place), then arrival order; priority first on sd.
	for model, ids := range map[string][]string{
		"tiny": {"v1-job-04", "v1-job-06", "v1-job-07", "v1-job-08"},
		"sd":   {"v1-img-01", "v1-img-02"},
	} {
		for _, want := range ids {
			j, err := s.Claim(model)
			if err != nil || j.ID != want {
				t.Fatalf("claim %s: %s, %v; want %s", model, j.ID, err, want)
			}
			if err := s.Complete(j.ID, []byte("done "+j.ID)); err != nil {
				t.Fatalf("complete %s: %v", j.ID, err)
			}
		}
		if _, err := s.Claim(model); !errors.Is(err, ErrEmpty) {
			t.Errorf("claim %s after its jobs: %v, want ErrEmpty", model, err)
		}
	}
	// New jobs get sequence numbers after the old ones.
	tb := &testBundle{s: s}
	n := tb.enqueue(t, "tiny", 0)
	if n.Seq <= 10 {
		t.Errorf("new job seq %d, want > 10 (the v1 file holds 10 jobs)", n.Seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := fileVersion(t, path); v != SchemaVersion {
		t.Errorf("file schema %d after open, want %d", v, SchemaVersion)
	}

	// A second open finds nothing to migrate.
	s2 := openTest(t, path, Options{NoSync: true})
	if m := s2.Migrated(); m != nil {
		t.Errorf("second open migrated again: %+v", m)
	}
}

// TestMigrate_BackupKept: an existing backup is never overwritten.
func TestMigrate_BackupKept(t *testing.T) {
	path := v1Copy(t)
	if err := os.WriteFile(path+".bak-v1", []byte("older backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path, Options{NoSync: true})
	m := s.Migrated()
	if m == nil || !strings.HasPrefix(m.Backup, path+".bak-v1-") {
		t.Fatalf("migration report %+v, want a timestamped backup", m)
	}
	if b, _ := os.ReadFile(path + ".bak-v1"); string(b) != "older backup" {
		t.Errorf("existing backup overwritten: %q", b)
	}
}

// TestMigrate_NoVersionKey: a store with buckets but no version key is
// version 1.
func TestMigrate_NoVersionKey(t *testing.T) {
	path := v1Copy(t)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyVersion) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path, Options{NoSync: true})
	if m := s.Migrated(); m == nil || m.From != 1 {
		t.Fatalf("migration report %+v, want from 1", m)
	}
	if _, err := s.Get("v1-job-01"); err != nil {
		t.Errorf("get: %v", err)
	}
}

// TestOpen_NewerSchemaRefused: a file stamped by a newer vramcram is refused,
// naming both versions, and left as it was.
func TestOpen_NewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vramcram.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	future := SchemaVersion + 1
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, uint64(future))
		return tx.Bucket(bucketMeta).Put(keyVersion, b)
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = Open(path, Options{NoSync: true})
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("open a newer store: %v, want ErrNewerSchema", err)
	}
	for _, want := range []string{"schema version 3", "up to 2", path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if v := fileVersion(t, path); v != future {
		t.Errorf("refused file now has schema %d, want %d untouched", v, future)
	}
	if _, err := os.Stat(path + ".bak-v3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused file was backed up: %v", err)
	}
}

// TestOpen_FreshFileStamped: a new file is written at SchemaVersion and
// needs no migration.
func TestOpen_FreshFileStamped(t *testing.T) {
	tb := setup(t)
	if m := tb.s.Migrated(); m != nil {
		t.Errorf("fresh file migrated: %+v", m)
	}
	if err := tb.s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := fileVersion(t, tb.path); v != SchemaVersion {
		t.Errorf("fresh file schema %d, want %d", v, SchemaVersion)
	}
}
