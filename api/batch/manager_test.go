package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

type fakeSched struct {
	bus      *scheduler.Bus
	mu       sync.Mutex
	notified map[string]int
}

func (f *fakeSched) Admit(_ context.Context, model string) error {
	if model == "broken" {
		return errors.New("model unavailable: broken")
	}
	return nil
}

func (f *fakeSched) Notify(model string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notified[model]++
}

func (f *fakeSched) Bus() *scheduler.Bus { return f.bus }

type bundle struct {
	t     *testing.T
	st    *store.Store
	m     *Manager
	sched *fakeSched
	dir   string
	clock time.Time
	path  string
	opts  store.Options
}

func setup(t *testing.T, maxQueued int) *bundle {
	t.Helper()
	dir := t.TempDir()
	b := &bundle{t: t, dir: dir, clock: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC), path: filepath.Join(dir, "db")}
	b.opts = store.Options{NoSync: true, MaxQueued: maxQueued}
	b.open()
	return b
}

func (b *bundle) open() {
	st, err := store.Open(b.path, b.opts)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = st.Close() })
	b.st = st
	b.sched = &fakeSched{bus: scheduler.NewBus(), notified: map[string]int{}}
	endpoints := map[string][]string{}
	for _, m := range []string{"alpha", "beta", "gamma", "broken"} {
		endpoints[m] = []string{"/v1/chat/completions"}
	}
	endpoints["embedder"] = []string{"/v1/embeddings"}
	b.m = New(Config{Dir: filepath.Join(b.dir, "files"), Priority: -10, Endpoints: endpoints, Chunk: 4,
		Aliases: map[string]string{"gpt-4o-mini": "alpha"},
		NowFunc: func() time.Time { return b.clock }}, st, b.sched)
}

func (b *bundle) pass() { b.m.pass(context.Background(), map[string]bool{}, true) }

func chatLine(id, model string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`, id, model, "q "+id)
}

func (b *bundle) upload(lines []string) store.File {
	b.t.Helper()
	f, err := b.m.SaveFile(context.Background(), "in.jsonl", strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		b.t.Fatal(err)
	}
	return f
}

func (b *bundle) create(f store.File) store.Batch {
	b.t.Helper()
	bt, err := b.m.Create(context.Background(), CreateRequest{InputFileID: f.ID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
	if err != nil {
		b.t.Fatal(err)
	}
	return bt
}

func (b *bundle) get(id string) store.Batch {
	b.t.Helper()
	bt, err := b.m.Get(id)
	if err != nil {
		b.t.Fatal(err)
	}
	return bt
}

// work claims up to n jobs of model and completes each with an answer
// naming its job (or fails it when fail says so).
func (b *bundle) work(model string, n int, fail func(store.Job) bool) {
	b.t.Helper()
	for range n {
		j, err := b.st.Claim(model)
		if errors.Is(err, store.ErrEmpty) {
			return
		}
		if err != nil {
			b.t.Fatal(err)
		}
		if fail != nil && fail(j) {
			if err := b.st.Fail(j.ID, "engine said no"); err != nil {
				b.t.Fatal(err)
			}
			continue
		}
		if err := b.st.Complete(j.ID, fmt.Appendf(nil, `{"answer":%q}`, j.Body)); err != nil {
			b.t.Fatal(err)
		}
	}
}

func (b *bundle) readLines(fileID string) []outputLine {
	b.t.Helper()
	if fileID == "" {
		return nil
	}
	_, fh, err := b.m.OpenFile(fileID)
	if err != nil {
		b.t.Fatal(err)
	}
	defer fh.Close()
	var out []outputLine
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var l outputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			b.t.Fatalf("output line %q: %v", sc.Bytes(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestManager_CompletesAMixedModelBatchOncePerLine(t *testing.T) {
	b := setup(t, 0)
	var lines []string
	models := []string{"alpha", "beta", "gamma"}
	for k := range 30 {
		lines = append(lines, chatLine(fmt.Sprintf("req-%d", k), models[k%3]))
		if k == 10 {
			lines = append(lines, "   ") // blank lines are skipped
		}
	}
	bt := b.create(b.upload(lines))
	if bt.Status != store.BatchValidating {
		t.Fatalf("created: %s", bt.Status)
	}
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status != store.BatchInProgress || bt.Counts.Total != 30 || bt.Enqueued != 30 {
		t.Fatalf("after validation: %+v", bt)
	}
	if b.sched.notified["alpha"] != 10 {
		t.Fatalf("notified: %v", b.sched.notified)
	}
	if st := b.m.Stats(); st.Batches[store.BatchInProgress] != 1 || st.Lines[store.JobStateQueued] != 30 {
		t.Fatalf("stats in progress: %+v", st)
	}
	j, _ := b.st.Get(store.BatchJobID(bt.ID, 0))
	if j.Priority != -10 || j.Endpoint != "/v1/chat/completions" {
		t.Fatalf("job: %+v", j)
	}
	failing := func(j store.Job) bool { return strings.Contains(string(j.Body), `"q req-4"`) }
	for _, m := range models {
		b.work(m, 100, failing)
	}
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status != store.BatchCompleted || bt.Counts != (store.BatchCounts{Total: 30, Completed: 29, Failed: 1}) {
		t.Fatalf("after the work: %+v", bt)
	}
	if bt.CompletedAt.IsZero() || bt.FinalizingAt.IsZero() || bt.InProgressAt.IsZero() {
		t.Fatalf("timestamps: %+v", bt)
	}
	if st := b.m.Stats(); st.Batches[store.BatchCompleted] != 1 || st.Batches[store.BatchInProgress] != 0 || len(st.Lines) != 0 {
		t.Fatalf("stats at the end: %+v", st)
	}
	out, errs := b.readLines(bt.OutputFileID), b.readLines(bt.ErrorFileID)
	if len(out) != 29 || len(errs) != 1 || errs[0].CustomID != "req-4" || errs[0].Error.Code != "request_failed" {
		t.Fatalf("output %d lines, errors %+v", len(out), errs)
	}
	seen := map[string]bool{}
	for _, l := range out {
		if seen[l.CustomID] {
			t.Fatalf("custom_id %s twice", l.CustomID)
		}
		seen[l.CustomID] = true
		var body struct{ Answer string }
		_ = json.Unmarshal(l.Response.Body, &body)
		if l.Response.StatusCode != 200 || !strings.Contains(body.Answer, `"q `+l.CustomID+`"`) {
			t.Fatalf("line %s: %+v %s", l.CustomID, l.Response, l.Response.Body)
		}
	}
	f, err := b.m.GetFile(bt.OutputFileID)
	if err != nil || f.Purpose != PurposeBatchOutput || f.Bytes == 0 {
		t.Fatalf("output file: %+v %v", f, err)
	}
}

func TestManager_BadLineFailsValidation(t *testing.T) {
	for name, bad := range map[string]string{
		"NotJSON":     `{"custom_id":`,
		"WrongURL":    strings.Replace(chatLine("x", "alpha"), "/v1/chat/completions", "/v1/embeddings", 1),
		"WrongMethod": strings.Replace(chatLine("x", "alpha"), `"POST"`, `"GET"`, 1),
		"Duplicate":   chatLine("req-0", "alpha"),
		"NoModel":     chatLine("x", "nope"),
		"Unserved":    chatLine("x", "embedder"),
		"Unavailable": chatLine("x", "broken"),
		"NoCustomID":  strings.Replace(chatLine("x", "alpha"), `"custom_id":"x",`, "", 1),
	} {
		t.Run(name, func(t *testing.T) {
			b := setup(t, 0)
			bt := b.create(b.upload([]string{chatLine("req-0", "alpha"), chatLine("req-1", "beta"), bad, chatLine("req-3", "gamma")}))
			b.pass()
			bt = b.get(bt.ID)
			if bt.Status != store.BatchFailed || bt.FailedAt.IsZero() || len(bt.Errors) != 1 || bt.Errors[0].Line != 3 {
				t.Fatalf("batch: %s %+v", bt.Status, bt.Errors)
			}
			if js, _ := b.st.BatchJobStates(bt.ID); len(js) != 0 {
				t.Fatalf("a failed batch queued jobs: %v", js)
			}
		})
	}
}

func TestManager_CancelLetsRunningLinesFinish(t *testing.T) {
	b := setup(t, 0)
	var lines []string
	for k := range 10 {
		lines = append(lines, chatLine(fmt.Sprintf("req-%d", k), "alpha"))
	}
	bt := b.create(b.upload(lines))
	b.pass()
	var running []store.Job
	for range 2 {
		j, err := b.st.Claim("alpha")
		if err != nil {
			t.Fatal(err)
		}
		running = append(running, j)
	}
	if bt, err := b.m.Cancel(bt.ID); err != nil || bt.Status != store.BatchCancelling {
		t.Fatalf("cancel: %+v %v", bt, err)
	}
	b.pass()
	if got := b.get(bt.ID); got.Status != store.BatchCancelling {
		t.Fatalf("with lines running: %s", got.Status)
	}
	for _, j := range running {
		if err := b.st.Complete(j.ID, []byte(`{"ok":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status != store.BatchCancelled || bt.CancelledAt.IsZero() || bt.Counts.Completed != 2 {
		t.Fatalf("after cancel: %+v", bt)
	}
	out, errs := b.readLines(bt.OutputFileID), b.readLines(bt.ErrorFileID)
	if len(out) != 2 || len(errs) != 8 || errs[0].Error.Code != "batch_cancelled" {
		t.Fatalf("partial output %d, errors %d", len(out), len(errs))
	}
	if _, err := b.m.Cancel(bt.ID); err == nil {
		t.Fatal("a cancelled batch cancelled again")
	}
}

func TestManager_ResumesEnqueueAfterRestartWithoutDuplicates(t *testing.T) {
	b := setup(t, 5) // the queue holds 5: the batch goes in in several passes
	var lines []string
	for k := range 12 {
		lines = append(lines, chatLine(fmt.Sprintf("req-%d", k), "alpha"))
	}
	bt := b.create(b.upload(lines))
	b.pass()
	if got := b.get(bt.ID); got.Enqueued != 5 {
		t.Fatalf("first pass enqueued %d", got.Enqueued)
	}
	// One line runs when the daemon dies: it runs again after the restart.
	if _, err := b.st.Claim("alpha"); err != nil {
		t.Fatal(err)
	}
	if err := b.st.Close(); err != nil {
		t.Fatal(err)
	}
	b.open()
	for range 10 {
		b.work("alpha", 3, nil)
		b.pass()
	}
	bt = b.get(bt.ID)
	if bt.Status != store.BatchCompleted || bt.Counts.Completed != 12 {
		t.Fatalf("after restart: %+v", bt)
	}
	out := b.readLines(bt.OutputFileID)
	seen := map[string]int{}
	for _, l := range out {
		seen[l.CustomID]++
	}
	if len(out) != 12 || len(seen) != 12 {
		t.Fatalf("output: %d lines, %d custom ids", len(out), len(seen))
	}
	// A finalize repeated (a crash before its commit) writes the same files.
	again, err := b.m.finalize(store.Batch{ID: bt.ID, Status: store.BatchCompleted, Enqueued: 12, Counts: bt.Counts})
	if err != nil || again.OutputFileID != bt.OutputFileID || len(b.readLines(again.OutputFileID)) != 12 {
		t.Fatalf("finalize again: %+v %v", again, err)
	}
}

func TestManager_ExpiryMarksUnfinishedLines(t *testing.T) {
	b := setup(t, 3)
	var lines []string
	for k := range 6 {
		lines = append(lines, chatLine(fmt.Sprintf("req-%d", k), "alpha"))
	}
	bt := b.create(b.upload(lines))
	b.pass()
	b.work("alpha", 1, nil)
	b.clock = b.clock.Add(25 * time.Hour)
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status != store.BatchExpired || bt.ExpiredAt.IsZero() {
		t.Fatalf("after the window: %+v", bt)
	}
	out, errs := b.readLines(bt.OutputFileID), b.readLines(bt.ErrorFileID)
	if len(out) != 1 || len(errs) != 5 {
		t.Fatalf("output %d, errors %d", len(out), len(errs))
	}
	for _, e := range errs {
		if e.Error.Code != "batch_expired" || e.CustomID == "" {
			t.Fatalf("error line %+v", e)
		}
	}
}

func TestManager_UploadLimit(t *testing.T) {
	b := setup(t, 0)
	b.m.cfg.MaxFileBytes = 10
	_, err := b.m.SaveFile(context.Background(), "big.jsonl", strings.NewReader(strings.Repeat("x", 11)))
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	ents, _ := os.ReadDir(b.m.cfg.Dir)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestManager_PublishesStatusChanges(t *testing.T) {
	b := setup(t, 0)
	sub := b.sched.bus.Subscribe(64)
	defer sub.Close()
	bt := b.create(b.upload([]string{chatLine("req-0", "alpha")}))
	b.pass()
	b.work("alpha", 1, nil)
	b.pass()
	var got []string
	for len(sub.C) > 0 {
		ev := <-sub.C
		if ev.Type != scheduler.EvBatchStatus || ev.Batch != bt.ID {
			t.Fatalf("event %+v", ev)
		}
		got = append(got, ev.State)
	}
	if want := "validating in_progress finalizing completed"; strings.Join(got, " ") != want {
		t.Fatalf("events %v, want %s", got, want)
	}
}

func TestManager_InputDeletedMidwayCancels(t *testing.T) {
	b := setup(t, 2)
	f := b.upload([]string{chatLine("req-0", "alpha"), chatLine("req-1", "alpha"), chatLine("req-2", "alpha")})
	bt := b.create(f)
	b.pass()
	if _, err := b.m.DeleteFile(f.ID); err != nil {
		t.Fatal(err)
	}
	b.work("alpha", 2, nil)
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status != store.BatchCancelled || len(bt.Errors) != 1 || bt.Errors[0].Code != "input_file_missing" || bt.Counts.Completed != 2 {
		t.Fatalf("batch: %+v", bt)
	}
	if out := b.readLines(bt.OutputFileID); len(out) != 2 {
		t.Fatalf("output: %d lines", len(out))
	}
}

func TestManager_RemovesOldPartialFiles(t *testing.T) {
	b := setup(t, 0)
	if err := os.MkdirAll(b.m.cfg.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(b.m.cfg.Dir, ".upload-1"), filepath.Join(b.m.cfg.Dir, ".output-2")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	b.m.removeTemps()
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old partial upload kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("fresh partial output removed: %v", err)
	}
}
