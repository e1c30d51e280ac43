// Package logring keeps the daemon's recent log lines in a bounded ring and
// hands new ones to followers (GET /logs/stream): a slog handler tees each
// record into it as one text line.
package logring

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Ring keeps the last n lines and fans new lines out to followers. Add never
// blocks: a follower whose buffer is full loses lines (Dropped counts them).
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int // index of the oldest line once lines is full
	size  int
	subs  map[*Follower]struct{}
}

// New returns a ring of n lines (min 1).
func New(n int) *Ring {
	return &Ring{size: max(n, 1), subs: map[*Follower]struct{}{}}
}

// Follower receives the lines added after it was made, on C, until Close.
type Follower struct {
	C       <-chan string
	c       chan string
	r       *Ring
	dropped uint64 // guarded by r.mu
	once    sync.Once
}

// Add keeps line and hands it to every follower with room.
func (r *Ring) Add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < r.size {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.next] = line
		r.next = (r.next + 1) % r.size
	}
	for f := range r.subs {
		select {
		case f.c <- line:
		default:
			f.dropped++
		}
	}
}

// Lines returns the kept lines, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.linesLocked()
}

func (r *Ring) linesLocked() []string {
	out := make([]string, 0, len(r.lines))
	if len(r.lines) < r.size {
		return append(out, r.lines...)
	}
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// Follow returns the kept lines and, from the same instant, a follower of
// the lines that come after them, with a buffer of buf lines (min 1).
func (r *Ring) Follow(buf int) ([]string, *Follower) {
	c := make(chan string, max(buf, 1))
	f := &Follower{C: c, c: c, r: r}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs[f] = struct{}{}
	return r.linesLocked(), f
}

// Close detaches f and closes C. Safe to call twice.
func (f *Follower) Close() {
	f.once.Do(func() {
		f.r.mu.Lock()
		delete(f.r.subs, f)
		close(f.c)
		f.r.mu.Unlock()
	})
}

// Dropped is how many lines f missed because its buffer was full.
func (f *Follower) Dropped() uint64 {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return f.dropped
}

// Tee returns a handler that passes each record to h and also writes it, as
// one logfmt line (slog's text format), into r. Records h does not enable
// are not kept either.
func Tee(h slog.Handler, r *Ring) slog.Handler {
	return &tee{h: h, text: slog.NewTextHandler(ringWriter{r}, &slog.HandlerOptions{Level: slog.LevelDebug - 4})}
}

type tee struct {
	h, text slog.Handler
}

func (t *tee) Enabled(ctx context.Context, l slog.Level) bool { return t.h.Enabled(ctx, l) }

func (t *tee) Handle(ctx context.Context, rec slog.Record) error {
	_ = t.text.Handle(ctx, rec) // the ring cannot fail
	return t.h.Handle(ctx, rec)
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	return &tee{h: t.h.WithAttrs(as), text: t.text.WithAttrs(as)}
}

func (t *tee) WithGroup(name string) slog.Handler {
	return &tee{h: t.h.WithGroup(name), text: t.text.WithGroup(name)}
}

// MaxLine bounds one kept line, in bytes; the rest is cut.
const MaxLine = 8 << 10

// ringWriter adds each Write (one record from slog's text handler) as a line.
type ringWriter struct{ r *Ring }

func (w ringWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	if len(line) > MaxLine {
		line = append(line[:MaxLine:MaxLine], "…"...)
	}
	w.r.Add(string(line))
	return len(p), nil
}
