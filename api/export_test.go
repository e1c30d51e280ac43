package api

import (
	"context"
	"net/http"
	"time"
)

// SetAcquireFunc makes s take its interactive slots from f instead of the
// scheduler's Acquire: f returns the engine's base URL, a context that ends
// with the slot (nil: never) and the finish func.
func SetAcquireFunc(s *Server, f func(ctx context.Context, model string, priority int) (string, context.Context, func(error), error)) {
	s.acquireFn = func(ctx context.Context, model string, priority int) (slot, error) {
		url, sctx, finish, err := f(ctx, model, priority)
		return slot{url: url, ctx: sctx, finish: finish}, err
	}
}

// SetWaitNotes sets when a waiting streaming request gets its comments.
func SetWaitNotes(s *Server, after, every time.Duration) {
	s.waitNoteAfter, s.waitNoteEvery = after, every
}

// SetKeepAliveFunc records the keep-alive each slot of s is given back
// with (Ollama's keep_alive): f gets the model and the duration.
func SetKeepAliveFunc(s *Server, f func(model string, d time.Duration)) {
	acquire := s.acquireFn
	s.acquireFn = func(ctx context.Context, model string, priority int) (slot, error) {
		sl, err := acquire(ctx, model, priority)
		sl.keepAlive = func(d time.Duration) { f(model, d) }
		return sl, err
	}
}

// SetEventWriteTimeout sets how long one event's write may stall.
func SetEventWriteTimeout(s *Server, d time.Duration) { s.eventWriteTimeout = d }

// EventClients is the number of /events streams open.
func EventClients(s *Server) int64 { return s.eventClients.Load() }

// SetEngineTransport makes s reach the engines through rt.
func SetEngineTransport(s *Server, rt http.RoundTripper) { s.engines.Transport = rt }
