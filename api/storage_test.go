package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// fullDiskStore is the real store whose Enqueue fails as on a full disk.
type fullDiskStore struct{ *store.Store }

func (fullDiskStore) Enqueue(_ context.Context, j *store.Job) error {
	return fmt.Errorf("enqueue %s: %w: commit: write /data/vramcram.db: %w", j.ID, store.ErrNoSpace, syscall.ENOSPC)
}

// TestSubmit_DiskFull: a submit the store cannot write for lack of space
// answers 507 storage_full with a message a person can act on, on the jobs
// door and on the OpenAI shape alike.
func TestSubmit_DiskFull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := api.New(b.cfg, b.ctl, fullDiskStore{b.store})
	t.Cleanup(srv.Close)
	b.handler = srv.Handler()
	rec := b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"hi"}`)
	if rec.Code != http.StatusInsufficientStorage {
		t.Fatalf("status %d %s, want 507", rec.Code, rec.Body)
	}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	decodeJSON(t, rec, &body)
	if body.Error.Code != "storage_full" || !strings.Contains(body.Error.Message, "storage.data_dir") {
		t.Errorf("error %+v, want storage_full naming storage.data_dir", body.Error)
	}
}

// TestHealth_StoreDegraded: while store writes fail, /health is degraded
// with the reason and counts the outcomes held apart from running ones.
func TestHealth_StoreDegraded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) {
		s := testSnapshot()
		s.Running, s.HeldWrites = 0, 3
		s.StoreDegraded = "store write failing: no space left on device (3 job outcome(s) held in memory, retrying)"
		return s, nil
	}
	rec := b.do(t, http.MethodGet, "/health", "")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	var h struct {
		Status     string `json:"status"`
		Reason     string `json:"reason"`
		Running    int    `json:"running"`
		HeldWrites int    `json:"held_writes"`
	}
	decodeJSON(t, rec, &h)
	if h.Status != "degraded" || !strings.HasPrefix(h.Reason, "store write failing: no space left") || h.Running != 0 || h.HeldWrites != 3 {
		t.Errorf("health %+v", h)
	}
}
