package runner

import (
	"context"
	"errors"
	"fmt"
)

// Run runs a one-shot engine (sd-cli) to its end through the same supervisor
// as a server: own process group, stdin from /dev/null, merged output into
// the Tail ring, pid records through SpawnedFunc, and when the leader exits
// whatever is left of its group is killed. cfg.OneShot is set for it. When
// ctx ends the whole group is SIGKILLed at once: a one-shot engine has no
// graceful stop, and the driver frees a dead process's GPU memory.
//
// Returns nil on exit code 0; ctx's cause (wrapped) when ctx ended first;
// *ExitError when the process failed; an error wrapping ErrBinaryNotFound
// when the binary is missing.
func Run(ctx context.Context, cfg Config) error {
	cfg.OneShot = true
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run engine %s: %w", cfg.Name, context.Cause(ctx))
	}
	p, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	stopWatch := context.AfterFunc(ctx, func() {
		p.kill(fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx)))
	})
	<-p.Done()
	stopWatch()
	if ctx.Err() != nil {
		p.log.Info("engine run killed", "pid", p.PID(), "cause", context.Cause(ctx))
		return fmt.Errorf("run engine %s: killed: %w", cfg.Name, context.Cause(ctx))
	}
	err = p.Err()
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == 0 && ee.Signal == "" {
		p.log.Info("engine run finished", "pid", p.PID())
		return nil
	}
	p.log.Warn("engine run failed", "pid", p.PID(), "err", err)
	return err
}
