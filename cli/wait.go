package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/scheduler"
)

// pollInterval is how often submit --wait reads the job's status: queue
// positions come from there, and it finishes the wait if events were lost.
const pollInterval = time.Second

// finalGrace is how long submit --wait waits for a job's last events once a
// poll has found it final.
const finalGrace = 2 * time.Second

// openEvents follows GET /events until ctx ends. The channel closes when the
// stream ends. It returns once the server has subscribed, so events after
// that are not missed.
func (c *client) openEvents(ctx context.Context) (<-chan scheduler.Event, error) {
	req, err := c.request(ctx, http.MethodGet, "/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(c.stream, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		return nil, decodeAPIError(resp.StatusCode, b[:n])
	}
	ch := make(chan scheduler.Event)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data:")
			if !ok {
				continue
			}
			var ev scheduler.Event
			if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) != nil {
				continue
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// waiter follows one job for submit --wait: progress lines go to stderr,
// LLM text to stdout as it is generated (when streaming), then the result.
type waiter struct {
	c        *client
	o        *submitOpts
	id       string
	model    string
	stream   bool // print LLM chunks to stdout as they come
	ttyErr   bool // stderr is a terminal: step progress rewrites one line
	streamed strings.Builder
	lastPos  int
	inStep   bool // a step line without its newline is on stderr
}

// say prints a progress line on stderr unless -q.
func (w *waiter) say(format string, a ...any) {
	if w.o.quiet {
		return
	}
	w.endStepLine()
	fmt.Fprintf(w.c.stderr, format+"\n", a...)
}

func (w *waiter) endStepLine() {
	if w.inStep {
		fmt.Fprintln(w.c.stderr)
		w.inStep = false
	}
}

// submitAndWait submits body and follows the job until it ends.
// --timeout counts from the job's acceptance: it bounds the wait for the
// job, not the submission.
func (c *client) submitAndWait(ctx context.Context, o *submitOpts, body map[string]any) error {
	sctx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	w := &waiter{c: c, o: o, model: o.model, lastPos: -1, ttyErr: isTerminal(c.stderr)}
	w.stream = o.stream.value(isTerminal(c.stdout))
	events, err := c.openEvents(sctx) // before the submit: no event of the job is missed
	if err != nil {
		if ctx.Err() != nil {
			return w.gaveUp(ctx)
		}
		w.say("(no event stream: %v; following the job by polling)", err)
	}
	b, err := c.do(ctx, http.MethodPost, "/jobs", body)
	if err != nil {
		if ctx.Err() != nil {
			return w.gaveUp(ctx)
		}
		return err
	}
	var sub wire.Accepted
	if err := json.Unmarshal(b, &sub); err != nil || sub.JobID == "" {
		return fmt.Errorf("unexpected answer to POST /jobs: %s", b)
	}
	w.id = sub.JobID
	w.say("job %s queued for %s", w.id, w.model)
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return w.loop(ctx, events)
}

// loop follows events and polls the job's status until the job ends. When a
// poll finds the job final before its job_finished event came, the events
// still in flight get finalGrace to arrive, so that no text is left out.
func (w *waiter) loop(ctx context.Context, events <-chan scheduler.Event) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	var grace <-chan time.Time
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil // the stream ended; polling goes on
				if grace != nil {
					return w.finish(ctx)
				}
				continue
			}
			if w.event(ev) {
				return w.finish(ctx)
			}
		case <-poll.C:
			j, _, err := w.c.job(ctx, w.id)
			if err != nil {
				if ctx.Err() != nil {
					return w.gaveUp(ctx)
				}
				return err
			}
			if j.Final() && events == nil {
				return w.finish(ctx)
			}
			if j.Final() {
				grace = time.After(finalGrace)
				continue // no more polls
			}
			w.polled(j)
			poll.Reset(pollInterval)
		case <-grace:
			return w.finish(ctx)
		case <-ctx.Done():
			return w.gaveUp(ctx)
		}
	}
}

// event handles one bus event; it reports whether the job has ended.
func (w *waiter) event(ev scheduler.Event) bool {
	if ev.JobID == w.id {
		switch ev.Type {
		case scheduler.EvJobStarted:
			w.say("running on %s", w.model)
		case scheduler.EvJobProgress:
			w.progress(ev)
		case scheduler.EvJobFinished:
			if ev.State != "queued" {
				return true
			}
			if w.stream && w.streamed.Len() > 0 {
				fmt.Fprintln(w.c.stdout)
			}
			w.streamed.Reset()
			w.say("attempt failed (%s); the job is queued again", ev.Error)
		}
		return false
	}
	if ev.Model == w.model {
		switch ev.Type {
		case scheduler.EvModelLoading:
			w.say("loading model %s (%d MiB reserved)", ev.Model, ev.VRAMMB)
		case scheduler.EvModelReady:
			w.say("model %s ready (loaded in %.2fs)", ev.Model, ev.Seconds)
		case scheduler.EvModelFailed, scheduler.EvModelUnavailable:
			w.say("model %s: %s", ev.Model, ev.Error)
		}
		return false
	}
	if ev.Type == scheduler.EvModelEvicted && ev.Reason == "evicted for "+w.model {
		w.say("evicting %s to make room for %s", ev.Model, w.model)
	}
	return false
}

// progress shows an LLM chunk on stdout or a diffusion step on stderr.
func (w *waiter) progress(ev scheduler.Event) {
	if ev.Steps > 0 {
		if w.o.quiet {
			return
		}
		if w.ttyErr {
			fmt.Fprintf(w.c.stderr, "\rstep %d/%d", ev.Step, ev.Steps)
			w.inStep = true
			return
		}
		fmt.Fprintf(w.c.stderr, "step %d/%d\n", ev.Step, ev.Steps)
		return
	}
	w.streamed.WriteString(ev.Chunk)
	if w.stream {
		fmt.Fprint(w.c.stdout, ev.Chunk)
	}
}

// polled reports a queued job's position when it changes.
func (w *waiter) polled(j wire.Job) {
	if j.Status != "queued" || j.QueuePosition == nil || *j.QueuePosition == w.lastPos {
		return
	}
	w.lastPos = *j.QueuePosition
	if w.lastPos == 0 {
		w.say("queued: next in line for %s%s", w.model, etaText(j.ETASeconds))
	} else {
		w.say("queued: %d jobs ahead in %s's queue%s", w.lastPos, w.model, etaText(j.ETASeconds))
	}
}

// etaText is ", done in about N s" when the server gave an estimate.
func etaText(eta *float64) string {
	if eta == nil {
		return ""
	}
	return fmt.Sprintf(", done in about %s", time.Duration(*eta*float64(time.Second)).Round(100*time.Millisecond))
}

// finish reads the job's final status and prints its result or its error.
func (w *waiter) finish(ctx context.Context) error {
	w.endStepLine()
	j, _, err := w.c.job(ctx, w.id)
	if err != nil {
		return err
	}
	switch j.Status {
	case "completed":
		streamed := ""
		if w.stream {
			streamed = w.streamed.String()
		}
		if err := w.c.printResult(ctx, w.id, w.o.output, streamed); err != nil {
			return err
		}
		w.say("%s", summary(j))
		return nil
	case "cancelled":
		return fmt.Errorf("job %s was cancelled", w.id)
	}
	return fmt.Errorf("job %s failed after %d attempt(s): %s", w.id, j.Attempts, j.Error)
}

// summary says how long a completed job took.
func summary(j wire.Job) string {
	if j.StartedAt == nil || j.FinishedAt == nil {
		return "completed"
	}
	return fmt.Sprintf("completed in %s (waited %s, ran %s)", ago(j.FinishedAt.Sub(j.CreatedAt)),
		ago(j.StartedAt.Sub(j.CreatedAt)), ago(j.FinishedAt.Sub(*j.StartedAt)))
}

// gaveUp explains why the wait ended early; the job itself goes on.
func (w *waiter) gaveUp(ctx context.Context) error {
	w.endStepLine()
	if w.stream && w.streamed.Len() > 0 {
		fmt.Fprintln(w.c.stdout)
	}
	left := "stopped waiting"
	code := 130
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		left, code = fmt.Sprintf("gave up waiting after %s (--timeout)", w.o.timeout), 1
	}
	if w.id == "" {
		return &exitError{code: code, err: errors.New(left + " before the server answered the submission; the job may be queued (vramcram models)")}
	}
	return &exitError{code: code, err: fmt.Errorf("%s; job %s goes on (vramcram cancel %s stops it)", left, w.id, w.id)}
}

// optBool is a boolean flag whose default is decided later (by whether a
// stream is a terminal) unless the user sets it.
type optBool struct {
	set, v bool
}

func (b *optBool) String() string {
	if b == nil || !b.set {
		return "auto"
	}
	return fmt.Sprint(b.v)
}

func (b *optBool) Set(s string) error {
	switch s {
	case "true", "1", "yes":
		b.v = true
	case "false", "0", "no":
		b.v = false
	default:
		return fmt.Errorf("want true or false, got %q", s)
	}
	b.set = true
	return nil
}

func (b *optBool) IsBoolFlag() bool { return true }

func (b *optBool) value(def bool) bool {
	if b.set {
		return b.v
	}
	return def
}
