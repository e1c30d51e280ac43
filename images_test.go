package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vramcram/vramcram/store"
)

func TestPruneImages(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := t.TempDir()
	if n, err := pruneImages(filepath.Join(dir, "none"), st); n != 0 || err != nil {
		t.Fatalf("missing dir: %d %v", n, err)
	}
	enqueue := func() string {
		j := &store.Job{ID: store.NewID(), Model: "sd", Type: "diffusion", Prompt: "x"}
		if err := st.Enqueue(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, j.ID), 0o750); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	completed, failed, queued := enqueue(), enqueue(), enqueue()
	for range 2 { // completed, then failed: FIFO
		if _, err := st.Claim("sd"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Complete(completed, []byte(`{"type":"diffusion"}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.Fail(failed, "boom"); err != nil {
		t.Fatal(err)
	}
	deleted := store.NewID() // retention deleted its job
	for _, name := range []string{deleted, "not-a-job.ID", "no-such-job"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	n, err := pruneImages(dir, st)
	if err != nil || n != 3 {
		t.Fatalf("pruned %d (%v), want 3", n, err)
	}
	for name, keep := range map[string]bool{completed: true, queued: true, failed: false, deleted: false, "not-a-job.ID": true, "no-such-job": false} {
		_, err := os.Stat(filepath.Join(dir, name))
		if keep != (err == nil) {
			t.Errorf("%s: kept %v, want %v", name, err == nil, keep)
		}
	}
}
