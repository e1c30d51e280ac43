package scheduler

import (
	"context"
	"errors"
	"fmt"

	"github.com/vramcram/vramcram/engine"
)

// ErrNoOutput marks a model whose engine output cannot be followed: it has
// not run since the daemon started, or its engine keeps no output.
var ErrNoOutput = errors.New("no engine output")

// EngineOutput is a model's engine output to follow: Recent lines (oldest
// first), then Lines as they come until Done (the process exited). Stop
// ends the following; call it when done.
type EngineOutput struct {
	PID    int
	Recent []string
	Lines  <-chan string
	Done   <-chan struct{}
	Stop   func()
}

// EngineOutput follows the output of model's engine: the running one, else
// the last one that ran (its Done is then closed: only Recent). buf is the
// buffer of Lines. Errors wrap ErrUnknownModel or ErrNoOutput.
func (s *Scheduler) EngineOutput(ctx context.Context, model string, buf int) (EngineOutput, error) {
	type res struct {
		out EngineOutput
		err error
	}
	r, err := ask(ctx, s, func(reply chan res) any {
		return outputReq{model: model, reply: func(o EngineOutput, err error) { reply <- res{o, err} }}
	})
	if err != nil {
		return EngineOutput{}, err
	}
	return r.out, r.err
}

type outputReq struct {
	model string
	reply func(EngineOutput, error)
}

// followOutput answers an outputReq for the loop. Following only takes the
// ring's lock, so it is done here.
func (s *Scheduler) followOutput(r outputReq) {
	m := s.st.models[r.model]
	if m == nil {
		r.reply(EngineOutput{}, fmt.Errorf("%w %q", ErrUnknownModel, r.model))
		return
	}
	eng := m.lastEng
	if m.inst != nil && m.inst.eng != nil {
		eng = m.inst.eng
	}
	if eng == nil {
		r.reply(EngineOutput{}, fmt.Errorf("%w: %s has not run since the daemon started", ErrNoOutput, r.model))
		return
	}
	f, ok := eng.(engine.OutputFollower)
	if !ok {
		r.reply(EngineOutput{}, fmt.Errorf("%w: the engine of %s keeps no output", ErrNoOutput, r.model))
		return
	}
	recent, lines, stop := f.FollowOutput(256)
	r.reply(EngineOutput{PID: eng.PID(), Recent: recent, Lines: lines, Done: eng.Done(), Stop: stop}, nil)
}
