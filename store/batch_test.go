package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func batchLines(n int, models ...string) []BatchLine {
	out := make([]BatchLine, n)
	for k := range out {
		out[k] = BatchLine{CustomID: fmt.Sprintf("req-%d", k), Model: models[k%len(models)], Type: "llm",
			Body: []byte(`{"model":"m"}`), End: int64(10 * (k + 1))}
	}
	return out
}

func newBatch(t *testing.T, tb *testBundle, status BatchStatus) Batch {
	t.Helper()
	b := Batch{ID: NewSortableID("batch_", tb.clock.Now()), Endpoint: "/v1/chat/completions", Status: status,
		CreatedAt: tb.clock.Now()}
	if err := tb.s.CreateBatch(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBatch_EnqueueLinesMovesTheCursorWithTheJobs(t *testing.T) {
	tb := setup(t)
	b := newBatch(t, tb, BatchInProgress)
	lines := batchLines(5, "a", "b")
	n, err := tb.s.EnqueueBatchLines(b.ID, 0, lines[:3], -10, 2)
	if err != nil || n != 3 {
		t.Fatalf("enqueue: %d %v", n, err)
	}
	// A retry from a stale cursor (as after a crash that lost nothing) is refused.
	if _, err := tb.s.EnqueueBatchLines(b.ID, 0, lines[:3], -10, 2); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("stale cursor: %v", err)
	}
	if n, err := tb.s.EnqueueBatchLines(b.ID, 3, lines[3:], -10, 2); err != nil || n != 2 {
		t.Fatalf("enqueue rest: %d %v", n, err)
	}
	got, err := tb.s.GetBatch(b.ID)
	if err != nil || got.Enqueued != 5 || got.Offset != 50 {
		t.Fatalf("batch after enqueue: %+v %v", got, err)
	}
	j := tb.get(t, BatchJobID(b.ID, 4))
	if j.Model != "a" || j.Priority != -10 || j.Endpoint != b.Endpoint || j.MaxAttempts != 2 || j.State != JobStateQueued {
		t.Fatalf("job of line 4: %+v", j)
	}
	c := tb.claim(t, "a")
	if err := tb.s.Complete(c.ID, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	ls, err := tb.s.BatchLines(b.ID, 0, 10)
	if err != nil || len(ls) != 5 {
		t.Fatalf("lines: %d %v", len(ls), err)
	}
	for k, l := range ls {
		if l.Line != k || l.CustomID != fmt.Sprintf("req-%d", k) || l.Job.ID != BatchJobID(b.ID, k) {
			t.Fatalf("line %d: %+v", k, l)
		}
	}
	if string(ls[0].Result) != `{"ok":true}` || ls[1].Result != nil {
		t.Fatalf("results: %q %q", ls[0].Result, ls[1].Result)
	}
	states, err := tb.s.BatchJobStates(b.ID)
	if err != nil || states[JobStateCompleted] != 1 || states[JobStateQueued] != 4 {
		t.Fatalf("states: %v %v", states, err)
	}
	models, err := tb.s.CancelBatchLines(b.ID, 0, 5)
	if err != nil || models["a"] != 2 || models["b"] != 2 {
		t.Fatalf("cancel: %v %v", models, err)
	}
	states, _ = tb.s.BatchJobStates(b.ID)
	if states[JobStateCompleted] != 1 || states[JobStateCancelled] != 4 {
		t.Fatalf("states after cancel: %v", states)
	}
}

func TestBatch_EnqueueLinesStopsAtMaxQueued(t *testing.T) {
	tb := setup(t, func(o *Options) { o.MaxQueued = 3 })
	b := newBatch(t, tb, BatchInProgress)
	lines := batchLines(5, "a")
	n, err := tb.s.EnqueueBatchLines(b.ID, 0, lines, 0, 0)
	if err != nil || n != 3 {
		t.Fatalf("enqueue: %d %v", n, err)
	}
	if _, err := tb.s.EnqueueBatchLines(b.ID, 3, lines[3:], 0, 0); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("full: %v", err)
	}
	got, _ := tb.s.GetBatch(b.ID)
	if got.Enqueued != 3 || got.Offset != 30 {
		t.Fatalf("cursor: %+v", got)
	}
}

func TestBatch_EnqueueLinesOnlyInProgress(t *testing.T) {
	tb := setup(t)
	b := newBatch(t, tb, BatchCancelling)
	if _, err := tb.s.EnqueueBatchLines(b.ID, 0, batchLines(1, "a"), 0, 0); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("cancelling batch: %v", err)
	}
}

func TestBatch_SurvivesReopen(t *testing.T) {
	tb := setup(t)
	b := newBatch(t, tb, BatchInProgress)
	if _, err := tb.s.EnqueueBatchLines(b.ID, 0, batchLines(2, "a"), 0, 0); err != nil {
		t.Fatal(err)
	}
	tb.claim(t, "a")
	if err := tb.s.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, tb.path, Options{NoSync: true})
	got, err := s.GetBatch(b.ID)
	if err != nil || got.Enqueued != 2 {
		t.Fatalf("batch after reopen: %+v %v", got, err)
	}
	states, _ := s.BatchJobStates(b.ID)
	if states[JobStateQueued] != 2 {
		t.Fatalf("the running line was not requeued: %v", states)
	}
}

func TestFiles_PutListDelete(t *testing.T) {
	tb := setup(t)
	ctx := context.Background()
	var ids []string
	for k := range 3 {
		tb.clock.Advance(time.Second)
		f := File{ID: NewSortableID("file-", tb.clock.Now()), Bytes: int64(k), Filename: "in.jsonl", Purpose: "batch", CreatedAt: tb.clock.Now()}
		if err := tb.s.PutFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, f.ID)
	}
	if err := tb.s.PutFile(ctx, File{ID: ids[0]}); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	list, err := tb.s.ListFiles("", "", 2)
	if err != nil || len(list) != 2 || list[0].ID != ids[2] || list[1].ID != ids[1] {
		t.Fatalf("first page: %+v %v", list, err)
	}
	list, _ = tb.s.ListFiles("batch", ids[1], 0)
	if len(list) != 1 || list[0].ID != ids[0] {
		t.Fatalf("after: %+v", list)
	}
	if f, err := tb.s.DeleteFile(ids[1]); err != nil || f.Bytes != 1 {
		t.Fatalf("delete: %+v %v", f, err)
	}
	if _, err := tb.s.GetFile(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := tb.s.GetFile("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

// A batch ID long enough that its jobs' IDs ("ID-LINE") would pass MaxIDLen
// is refused at creation: those jobs would be records the store itself
// cannot read back, and the queue would stick on them.
func TestBatch_IDLeavesRoomForLineNumbers(t *testing.T) {
	tb := setup(t)
	long := Batch{ID: strings.Repeat("b", MaxBatchIDLen+1), Endpoint: "/v1/chat/completions", Status: BatchInProgress}
	if err := tb.s.CreateBatch(context.Background(), long); !errors.Is(err, ErrInvalid) {
		t.Fatalf("batch ID of %d bytes: %v, want ErrInvalid", len(long.ID), err)
	}
	b := Batch{ID: strings.Repeat("b", MaxBatchIDLen), Endpoint: "/v1/chat/completions", Status: BatchInProgress}
	if err := tb.s.CreateBatch(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if !ValidID(BatchJobID(b.ID, 9_999_999_999)) {
		t.Fatalf("the longest line's job ID %q is not valid", BatchJobID(b.ID, 9_999_999_999))
	}
}
