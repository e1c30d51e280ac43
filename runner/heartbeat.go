package runner

import (
	"fmt"
	"time"
)

// heartbeat GETs ReadyPath every HeartbeatInterval once the engine is ready.
// When no probe has succeeded for longer than HeartbeatTimeout the engine is
// taken for hung: its group is SIGKILLed and Err becomes ErrHeartbeatLost.
// llama-server's /health stays fast while every slot is busy, so a slow
// answer means a stuck process, not a busy one. The watchdog ends when the
// Process leaves the ready state.
func (p *Process) heartbeat() {
	defer p.wg.Done()
	interval, timeout := p.cfg.HeartbeatInterval, p.cfg.HeartbeatTimeout
	perProbe := min(interval, timeout)
	last := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-p.exitedCh:
			return
		case <-tick.C:
		}
		if p.State() != StateReady {
			// Stopping: the stopper owns the end. llama-server closes its
			// listener on SIGTERM while it waits for in-flight clients, so
			// probes would fail and race the grace period.
			return
		}
		if p.probe(p.lifeCtx, perProbe) {
			last = time.Now()
			continue
		}
		silent := time.Since(last)
		if silent <= timeout {
			p.log.Debug("engine heartbeat missed", "silent", silent.Round(time.Millisecond))
			continue
		}
		err := fmt.Errorf("engine %s: %w: no answer from %s for %s", p.cfg.Name, ErrHeartbeatLost,
			p.cfg.ReadyPath, silent.Round(time.Millisecond))
		if s := tailSummary(p.ring.lines()); s != "" {
			err = fmt.Errorf("%w; last output: %s", err, s)
		}
		p.log.Error("engine missed heartbeats; killing it", "silent", silent.Round(time.Millisecond), "timeout", timeout)
		p.kill(err)
		return
	}
}
