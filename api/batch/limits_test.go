package batch

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// Two uploads at the same instant (a fixed clock) get different IDs, and
// neither touches the other's content (the IDs were equal, and the second
// upload replaced, then deleted, the first one's content).
func TestSaveFile_TwoUploadsAtOneInstantKeepBoth(t *testing.T) {
	b := setup(t, 0)
	f1, err := b.m.SaveFile(context.Background(), "a.jsonl", strings.NewReader("AAAA\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err2 := b.m.SaveFile(context.Background(), "b.jsonl", strings.NewReader("BBBB\n"))
	if err2 != nil {
		t.Fatalf("second upload: %v", err2)
	}
	_, fh, err := b.m.OpenFile(f1.ID)
	if err != nil {
		t.Fatalf("first upload's content is gone: %v", err)
	}
	defer fh.Close()
	got, _ := io.ReadAll(fh)
	if string(got) != "AAAA\n" {
		t.Fatalf("first upload's content is now %q", got)
	}
}

// Sortable IDs end in random characters (they were the time again).
func TestNewSortableID_DiffersAtOneInstant(t *testing.T) {
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	a, c := store.NewSortableID("file-", now), store.NewSortableID("file-", now)
	if a == c {
		t.Fatalf("two IDs at one instant are equal: %s", a)
	}
}

// MaxLineBytes bounds a line without its terminator, whether the line ends
// in a newline or the file (a last line without one was allowed a byte more).
func TestValidate_LineLimitWithOrWithoutNewline(t *testing.T) {
	for _, nl := range []string{"\n", ""} {
		b := setup(t, 0)
		line := chatLine("req-0", "alpha")
		b.m.cfg.MaxLineBytes = len(line) - 1
		f, err := b.m.SaveFile(context.Background(), "in.jsonl", strings.NewReader(line+nl))
		if err != nil {
			t.Fatal(err)
		}
		bt := b.create(f)
		b.pass()
		bt = b.get(bt.ID)
		t.Logf("trailing newline %q: status %s errors %+v", nl, bt.Status, bt.Errors)
		if bt.Status != store.BatchFailed {
			t.Errorf("a %d-byte line passed a %d-byte limit (no trailing newline: %v)", len(line), b.m.cfg.MaxLineBytes, nl == "")
		}
	}
}

// Per-line errors quote the offending values clipped: the stored batch
// record does not grow with the input (20 long urls made 4 MB of messages).
func TestValidate_ErrorMessagesAreClipped(t *testing.T) {
	b := setup(t, 0)
	huge := strings.Repeat(`\u0001`, 50_000)
	var lines []string
	for i := range 20 {
		l := strings.Replace(chatLine("r"+string(rune('a'+i)), "alpha"), `"url":"/v1/chat/completions"`, `"url":"/`+strings.Repeat(`\u0001`, 0)+huge+`"`, 1)
		lines = append(lines, l)
	}
	bt := b.create(b.upload(lines))
	b.pass()
	bt = b.get(bt.ID)
	total := 0
	for _, e := range bt.Errors {
		total += len(e.Message)
	}
	t.Logf("status %s, %d errors, %d bytes of messages for a %d-byte input", bt.Status, len(bt.Errors), total, 20*len(lines[0]))
	if total > 100_000 {
		t.Fatalf("error messages hold %d bytes", total)
	}
}

// A line may name its model by an alias, as the interactive routes take it
// (it failed with model_not_found); the job is the model's.
func TestValidate_LineModelByAlias(t *testing.T) {
	b := setup(t, 0)
	bt := b.create(b.upload([]string{chatLine("r1", "gpt-4o-mini")}))
	b.pass()
	bt = b.get(bt.ID)
	if bt.Status == store.BatchFailed || len(bt.Errors) > 0 {
		t.Fatalf("batch %s, errors %+v", bt.Status, bt.Errors)
	}
	j, err := b.st.Get(store.BatchJobID(bt.ID, 0))
	if err != nil || j.Model != "alpha" {
		t.Fatalf("job of the line: %+v %v; want model alpha", j, err)
	}
}
