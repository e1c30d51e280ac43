package api

import (
	"context"

	"github.com/vramcram/vramcram/engine"
)

// SetUsageFunc records the tokens each slot of s is given back with: f
// gets the model and the usage read off the engine's answer.
func SetUsageFunc(s *Server, f func(model string, u engine.Usage)) {
	acquire := s.acquireFn
	s.acquireFn = func(ctx context.Context, model string, priority int) (slot, error) {
		sl, err := acquire(ctx, model, priority)
		sl.usage = func(u engine.Usage) { f(model, u) }
		return sl, err
	}
}
