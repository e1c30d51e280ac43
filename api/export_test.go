package api

import (
	"context"
	"time"
)

// SetAcquireFunc makes s take its interactive slots from f instead of the
// scheduler's Acquire: f returns the engine's base URL and the release func.
func SetAcquireFunc(s *Server, f func(ctx context.Context, model string, priority int) (string, func(ok bool), error)) {
	s.acquireFn = func(ctx context.Context, model string, priority int) (slot, error) {
		url, release, err := f(ctx, model, priority)
		return slot{url: url, release: release}, err
	}
}

// SetStreamTimings shortens the job streams' store poll and keep-alive; it
// returns a func that restores them.
func SetStreamTimings(poll, keepAlive time.Duration) func() {
	p, k := streamPoll, streamKeepAlive
	streamPoll, streamKeepAlive = poll, keepAlive
	return func() { streamPoll, streamKeepAlive = p, k }
}
