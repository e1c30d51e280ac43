package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/scheduler"
)

// Leaser is the optional part of the scheduler that serves interactive
// requests (the OpenAI-compatible routes): Acquire waits, under the same
// priorities, VRAM rules and policy as queued jobs, for a free slot of a
// ready instance of model, loading it if needed. *scheduler.Scheduler
// implements it.
type Leaser interface {
	Acquire(ctx context.Context, model string, priority int) (*scheduler.Lease, error)
}

// errNoLeaser is returned when the scheduler serves no interactive requests.
var errNoLeaser = &Error{Status: http.StatusNotImplemented, Code: CodeNotAvailable,
	Message: "interactive requests are not available in this build"}

// errAbandonedSlot is the outcome of a slot whose request ended without
// an answer from forward (a panic).
var errAbandonedSlot = errors.New("request ended before the engine answered")

// slot is a slot of a loaded engine held by one interactive request.
type slot struct {
	url string          // the engine's base URL
	ctx context.Context // ends when the engine behind the slot dies or the scheduler stops; nil: never
	// keepAlive, if set, overrides how long the engine may stay idle
	// once the slot is back (Ollama's keep_alive; see Lease.SetKeepAlive).
	keepAlive func(time.Duration)
	// usage, if set, records the tokens the request cost (read off the
	// answer's tail, usage_tail.go); called before finish.
	usage func(engine.Usage)
	// finish gives the slot back with the request's outcome: nil
	// (completed), a context cancellation (the client left: cancelled) or
	// what went wrong (failed).
	finish func(err error)
}

// acquireFunc hands out slots; tests set one in place of the scheduler's
// Acquire (see export_test.go).
type acquireFunc func(ctx context.Context, model string, priority int) (slot, error)

// acquire waits for a slot of model.
func (s *Server) acquire(ctx context.Context, model string) (slot, error) {
	if s.acquireFn != nil {
		return s.acquireFn(ctx, model, s.cfg.InteractivePriority)
	}
	l, ok := s.sched.(Leaser)
	if !ok {
		return slot{}, errNoLeaser
	}
	lease, err := l.Acquire(ctx, model, s.cfg.InteractivePriority)
	if err != nil {
		return slot{}, err
	}
	return slot{url: lease.URL, ctx: lease.Context(), finish: lease.Finish, keepAlive: lease.SetKeepAlive, usage: lease.SetUsage}, nil
}

// openAIModel is one entry of GET /v1/models.
type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Type    string `json:"type"`               // VramCram's: "llm" | "diffusion"
	AliasOf string `json:"alias_of,omitempty"` // VramCram's: the model an alias names
}

// openAIModelList builds the answer of GET /v1/models once: the configured
// models do not change while the server runs.
func (s *Server) openAIModelList() []openAIModel {
	names := make([]string, 0, len(s.cfg.ModelTypes))
	for n := range s.cfg.ModelTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]openAIModel, 0, len(names))
	for _, n := range names {
		out = append(out, openAIModel{ID: n, Object: "model", Created: s.started.Unix(), OwnedBy: "vramcram", Type: string(s.cfg.ModelTypes[n])})
	}
	aliases := make([]string, 0, len(s.cfg.Aliases))
	for a := range s.cfg.Aliases {
		aliases = append(aliases, a)
	}
	slices.Sort(aliases)
	for _, a := range aliases { // each alias is a model id a client may use
		m := s.cfg.Aliases[a]
		out = append(out, openAIModel{ID: a, Object: "model", Created: s.started.Unix(), OwnedBy: "vramcram", Type: string(s.cfg.ModelTypes[m]), AliasOf: m})
	}
	return out
}

// openAIModels handles GET /v1/models: every configured model.
func (s *Server) openAIModels(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": s.oaiModels})
}

// openAIModel handles GET /v1/models/{model}.
func (s *Server) openAIModel(c echo.Context) error {
	name := c.Param("model")
	for _, m := range s.oaiModels {
		if m.ID == name {
			return c.JSON(http.StatusOK, m)
		}
	}
	e := s.unknownModel(name)
	e.Param = "model"
	return e
}

// openAIRoute handles POST /v1/chat/completions, /v1/completions and
// /v1/embeddings: the body is checked, then served by serveLeased at the
// engine's route of the same name.
func (s *Server) openAIRoute(k openAIKind) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := s.readJSONBody(c, nil)
		if err != nil {
			return err
		}
		model, stream, err := s.parseOpenAI(k, body)
		if err != nil {
			return err
		}
		if s.serveRemote(c, model, body) {
			return nil
		}
		return s.serveLeased(c, engineCall{model: model, stream: stream, path: k.enginePath(), body: body, contentType: jsonContentType})
	}
}

// engineCall is one request to forward to a model's engine.
type engineCall struct {
	model       string // the configured name (aliases resolved)
	stream      bool   // the client asked for a stream: comments while it waits
	method      string // default POST
	path        string // the engine's path, with its query if any
	body        []byte
	contentType []string
	tail        *usageTail // nil: the answer's tokens are not read
}

// serveLeased acquires a slot of the call's model's engine (loading the
// model if needed), forwards the call there and relays the answer (JSON, or
// server-sent events) as it comes. The slot goes back on every path with
// the outcome.
func (s *Server) serveLeased(c echo.Context, call engineCall) error {
	if err := s.refuseForeignLoad(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	var wait *waitNotes
	if call.stream {
		wait = s.noteWaiting(c, call.model)
	}
	sl, err := s.acquire(ctx, call.model)
	started := wait.stop()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // the client left while waiting: nobody to answer
		}
		var ae *Error
		if !errors.As(err, &ae) {
			ae = asError(acquireError(call.model, err))
		}
		if ae.Code == CodeQueueFull {
			c.Response().Header().Set("Retry-After", "5")
		}
		if started {
			writeStreamError(c, ae) // the stream is open: the error is its last event
			return nil
		}
		return ae
	}
	// The slot goes back on every way out, a panic included (then as
	// failed).
	outcome := errAbandonedSlot
	defer func() { sl.finish(outcome) }()
	// The engine call ends with the client's request or with the slot
	// (its engine died, the scheduler stopped), whichever ends first.
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	if sl.ctx != nil {
		defer context.AfterFunc(sl.ctx, cancel)()
	}
	if sl.usage != nil {
		call.tail = getUsageTail()
		defer putUsageTail(call.tail)
	}
	outcome, err = s.forward(c, ectx, sl.url, call)
	if u, ok := call.tail.usage(); ok && outcome == nil {
		sl.usage(u)
	}
	if outcome != nil && ctx.Err() == nil && sl.ctx != nil && sl.ctx.Err() != nil {
		outcome = fmt.Errorf("engine stopped: %v", context.Cause(sl.ctx))
	}
	var ae *Error
	if err != nil && started && errors.As(err, &ae) {
		writeStreamError(c, ae) // the stream was opened while waiting
		return nil
	}
	return err
}
