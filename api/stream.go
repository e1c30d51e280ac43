package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// JobTexter is the optional part of the scheduler that tells the text a
// running LLM job has generated so far, for streams that attach late.
type JobTexter interface {
	JobText(ctx context.Context, id string) (string, int, bool, error)
}

// Stream message types, as SSE event names and as the "type" of /ws messages.
const (
	MsgToken    = "token"    // text generated (LLM); pieces concatenate to the result
	MsgReset    = "reset"    // the job was requeued to run again: drop the text so far
	MsgProgress = "progress" // sampling step (diffusion)
	MsgDone     = "done"     // the job is final; last message of the stream
	// MsgError: an attempt of the job failed (the engine's error, e.g. an
	// error event in the middle of its stream); reset or done follows.
	MsgError = "error"
)

// streamMsg is one message of a job stream.
type streamMsg struct {
	Type   string `json:"type"`
	JobID  string `json:"job_id"`
	Text   string `json:"text,omitempty"`
	Tokens int    `json:"tokens,omitempty"` // token: chunks of text sent so far
	Step   int    `json:"step,omitempty"`
	Steps  int    `json:"steps,omitempty"`
	Status string `json:"status,omitempty"` // done: the final state; reset: "queued"
	Error  string `json:"error,omitempty"`
}

// Timings of job streams; variables so that tests may shorten them.
var (
	streamPoll      = 2 * time.Second  // store check, in case the bus dropped the final event
	streamKeepAlive = 15 * time.Second // SSE comment line on an idle stream
)

// streamBuffer is the bus buffer of one stream: enough for bursts of
// tokens (a stream that falls further behind fills the gap from the
// store, see follow), small enough that the server-wide bound on streams
// bounds their memory (about 70 KiB each).
const streamBuffer = 256

// streamJob handles GET /jobs/{id}/stream: server-sent events with the
// text of an LLM job as it is generated (a client that attaches late first
// gets the text so far in one token event), then a done event with the
// final status. For a job already final, the whole text and done.
func (s *Server) streamJob(c echo.Context) error {
	if err := s.takeJobStream(); err != nil {
		c.Response().Header().Set("Retry-After", "5")
		return err
	}
	defer s.jobStreams.Add(-1)
	sub := s.sched.Bus().Subscribe(streamBuffer) // before reading the job: no event falls in between
	defer sub.Close()
	j, err := s.loadJob(c)
	if err != nil {
		return err
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.Writer)
	_, _ = fmt.Fprintf(w, ": job %s\n\n", j.ID) // headers out now: the client knows the stream is attached
	_ = rc.Flush()
	send := func(m streamMsg) error {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.Type, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	ping := func() error {
		if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
			return err
		}
		return rc.Flush()
	}
	_ = s.follow(c.Request().Context(), sub, j, send, ping)
	return nil
}

// follower tracks what a stream has sent of one job.
type follower struct {
	s      *Server
	id     string
	emit   func(streamMsg) error
	sent   int // bytes of text sent
	tokens int // chunks of text sent (the Tokens of the last progress event covered)
}

// follow sends job j's stream through emit until the job is final, ctx ends
// or the server closes. sub must have been subscribed before j was read.
// ping, if set, is called on idle streams. The error is emit's or ctx's.
func (s *Server) follow(ctx context.Context, sub *scheduler.Subscription, j store.Job, emit func(streamMsg) error, ping func() error) error {
	f := &follower{s: s, id: j.ID, emit: emit}
	if final(j.State) {
		return f.finish(j)
	}
	if j.State == store.JobStateRunning {
		if err := f.catchUp(ctx); err != nil {
			return err
		}
	}
	poll := time.NewTicker(streamPoll)
	defer poll.Stop()
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return nil
		case <-keep.C:
			if ping != nil {
				if err := ping(); err != nil {
					return err
				}
			}
		case <-poll.C:
			if done, err := f.check(); done || err != nil {
				return err
			}
		case ev, ok := <-sub.C:
			if !ok {
				return nil
			}
			if ev.JobID != f.id {
				continue
			}
			if done, err := f.onEvent(ctx, ev); done || err != nil {
				return err
			}
		}
	}
}

func final(st store.JobState) bool {
	return st == store.JobStateCompleted || st == store.JobStateFailed || st == store.JobStateCancelled
}

// onEvent handles one bus event of the job and reports whether the stream
// is over.
func (f *follower) onEvent(ctx context.Context, ev scheduler.Event) (bool, error) {
	switch ev.Type {
	case scheduler.EvJobProgress:
		return false, f.progress(ctx, ev)
	case scheduler.EvJobFinished:
		if ev.Error != "" {
			if err := f.emit(streamMsg{Type: MsgError, JobID: f.id, Status: ev.State, Error: ev.Error}); err != nil {
				return false, err
			}
		}
		if ev.State == string(store.JobStateQueued) {
			return false, f.reset() // requeued for another attempt
		}
		return f.check()
	}
	return false, nil
}

// reset tells the client to drop the text so far: the job runs again.
func (f *follower) reset() error {
	if f.sent == 0 && f.tokens == 0 {
		return nil
	}
	f.sent, f.tokens = 0, 0
	return f.emit(streamMsg{Type: MsgReset, JobID: f.id, Status: string(store.JobStateQueued)})
}

// check reads the job; a final job ends the stream.
func (f *follower) check() (bool, error) {
	j, err := f.s.store.Get(f.id)
	if errors.Is(err, store.ErrNotFound) {
		return true, f.emit(streamMsg{Type: MsgDone, JobID: f.id, Status: "deleted", Error: "the job no longer exists"})
	}
	if err != nil {
		return false, nil // try again at the next event or poll
	}
	if final(j.State) {
		return true, f.finish(j)
	}
	return false, nil
}

// progress relays one progress event: the next chunk of text, or a
// diffusion step. A gap in the chunk numbers (the bus dropped events for
// this slow stream) is filled from the job's text.
func (f *follower) progress(ctx context.Context, ev scheduler.Event) error {
	switch {
	case ev.Steps > 0:
		return f.emit(streamMsg{Type: MsgProgress, JobID: f.id, Step: ev.Step, Steps: ev.Steps})
	case ev.Tokens <= f.tokens: // sent already (in the catch-up text)
		return nil
	case ev.Tokens == f.tokens+1:
		f.tokens, f.sent = ev.Tokens, f.sent+len(ev.Chunk)
		return f.emit(streamMsg{Type: MsgToken, JobID: f.id, Text: ev.Chunk, Tokens: ev.Tokens})
	}
	return f.catchUp(ctx)
}

// catchUp sends the text generated so far that this stream has not sent.
func (f *follower) catchUp(ctx context.Context) error {
	jt, ok := f.s.sched.(JobTexter)
	if !ok {
		return nil
	}
	text, n, running, err := jt.JobText(ctx, f.id)
	if err != nil || !running {
		return nil // not running here (any more): the final text comes with finish
	}
	if n < f.tokens { // another attempt, whose requeue event was dropped
		if err := f.reset(); err != nil {
			return err
		}
	}
	f.tokens = n
	if len(text) <= f.sent {
		return nil
	}
	piece := text[f.sent:]
	f.sent = len(text)
	return f.emit(streamMsg{Type: MsgToken, JobID: f.id, Text: piece, Tokens: n})
}

// finish sends what the stream has not sent of a completed LLM job's stored
// text (so that the stream carries exactly that text), then done.
func (f *follower) finish(j store.Job) error {
	if j.State == store.JobStateCompleted && j.Type == string(engine.KindLLM) {
		if b, err := f.s.store.Result(j.ID); err == nil {
			var res struct {
				Text string `json:"text"`
			}
			if json.Unmarshal(b, &res) == nil && len(res.Text) > f.sent {
				if err := f.emit(streamMsg{Type: MsgToken, JobID: f.id, Text: res.Text[f.sent:]}); err != nil {
					return err
				}
			}
		}
	}
	return f.emit(streamMsg{Type: MsgDone, JobID: f.id, Status: string(j.State), Error: j.Error})
}
