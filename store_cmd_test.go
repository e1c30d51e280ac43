package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/vramcram/vramcram/store"
)

// TestStoreCmd_CheckRecover: a store with jobs is damaged (one leaf page of
// its records zeroed); the daemon's open refuses it with the way out;
// "store check" reports the damage; "store recover" copies the readable jobs
// into a fresh file that opens, keeps the damaged one, and "store check"
// then finds it sound.
func TestStoreCmd_CheckRecover(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, fmt.Sprintf("storage: {data_dir: %q}\n", dir))
	path := filepath.Join(dir, storeFile)
	s, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		j := store.Job{ID: fmt.Sprintf("job-%03d", i), Model: "m", Type: "llm", Prompt: strings.Repeat("x", 300)}
		if err := s.Enqueue(context.Background(), &j); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	runCmd := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := runCmd("store", "check", "-config", cfgPath); code != 0 || !strings.Contains(out, "no damage found") || !strings.Contains(out, "100 queued") {
		t.Fatalf("check a sound store: %d %s", code, out)
	}

	zeroJobsLeaf(t, path)
	if _, err := store.Open(path, store.Options{}); err == nil || !strings.Contains(err.Error(), "vramcram store recover") {
		t.Fatalf("open the damaged store: %v, want an error naming store recover", err)
	}
	code, out := runCmd("store", "check", "-config", cfgPath)
	if code != 1 || !strings.Contains(out, "DAMAGED") {
		t.Fatalf("check a damaged store: %d %s", code, out)
	}
	code, out = runCmd("store", "recover", "-config", cfgPath)
	if code != 0 || !strings.Contains(out, "damaged file kept as "+path+".damaged-") {
		t.Fatalf("recover: %d %s", code, out)
	}
	t.Log(out)
	if code, out := runCmd("store", "check", "-config", cfgPath); code != 0 {
		t.Fatalf("check the recovered store: %d %s", code, out)
	}
	s, err = store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open the recovered store: %v", err)
	}
	defer s.Close()
	depths, err := s.Depths()
	if err != nil {
		t.Fatal(err)
	}
	if depths["m"] == 0 || depths["m"] >= n {
		t.Errorf("recovered %d queued jobs of %d, want most but not those of the zeroed page", depths["m"], n)
	}
	if code, out := runCmd("store", "nope"); code != 2 || !strings.Contains(out, "usage") {
		t.Errorf("unknown store subcommand: %d %s", code, out)
	}
}

// zeroJobsLeaf zeroes the first leaf page under the jobs bucket's root (a
// branch page: a 16-byte header, then 16-byte elements whose last 8 bytes
// are the child's page id).
func zeroJobsLeaf(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var root int64
	ps := int64(db.Info().PageSize)
	_ = db.View(func(tx *bbolt.Tx) error {
		root = int64(tx.Bucket([]byte("jobs")).Root())
		return nil
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, ps)
	if _, err := f.ReadAt(page, root*ps); err != nil {
		t.Fatal(err)
	}
	if page[8] != 0x01 {
		t.Fatalf("jobs root %d is not a branch page", root)
	}
	leaf := int64(binary.LittleEndian.Uint64(page[16+8:]))
	if _, err := f.WriteAt(make([]byte, ps), leaf*ps); err != nil {
		t.Fatal(err)
	}
}
