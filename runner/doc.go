// Package runner is the one child-process supervisor of every engine: a
// server (llama-server, sd-server, a command engine) on a private 127.0.0.1
// port, or a one-shot run (sd-cli, Run). It owns the spawn in its own
// process group, the port, readiness, the heartbeat watchdog, the ring of
// recent output lines, the graceful stop, the reap and the exit
// classification, and the pid records. It knows no engine's protocol: the
// engine packages (engine/llamacpp, engine/sdcpp, engine/command) give it
// their argv, readiness path and output markers, and speak to the child
// with Post and Forward. It imports nothing of this module.
//
// # State machine
//
//	        Start
//	          │ spawn (own process group, free port)
//	          ▼
//	    ┌─ starting ──── WaitReady: GET ReadyPath every 10ms until 200
//	    │     │  ▲
//	    │     │  └─ port taken ("couldn't bind HTTP server socket"):
//	    │     │     respawn on a new port, up to 3 spawns in all
//	    │     ▼ 200
//	    │   ready ────── heartbeat: GET ReadyPath every HeartbeatInterval
//	    │     │
//	    │     │ Stop, ready timeout, ctx done, heartbeat lost
//	    │     ▼
//	    ├─► stopping ─── SIGTERM group, StopGrace, SIGKILL group
//	    │     │           (heartbeat lost: SIGKILL at once)
//	    │     ▼
//	    └─► exited ───── Done() closed, Err() says why
//	(the engine exits on its own, from any state)
//
// Exactly one goroutine, the supervisor, waits for the child. When the leader
// exits it SIGKILLs the whole process group while the leader is still an
// unreaped zombie (so the group ID cannot have been reused), which takes
// grandchildren down with it; then it reaps the leader, drains the output
// pipe, records Err and closes Done. Signals are only ever sent while the
// leader is unreaped, for the same reason.
//
// Err after Done:
//
//	ErrStopped          Stop was called, or WaitReady's ctx ended
//	ErrReadyTimeout     not ready within ReadyTimeout after Start (wrapped)
//	ErrHeartbeatLost    /health failed for HeartbeatTimeout (wrapped, with the last output lines)
//	*ExitError          the engine exited on its own (crash, bad model, taken port ×3)
//
// # Stop contract
//
// llama-server handles the first SIGTERM by stopping its task loop, but a
// request that is in flight at that moment never gets an answer, and the
// process does not exit until that client disconnects (up to --timeout,
// 3600 s by default); a second SIGTERM makes it exit at once with code 1.
// So a SIGTERM sent while requests are running does not stop anything
// promptly. Callers drain first: stop handing out work, let in-flight
// requests finish or cancel their contexts (a cancelled request closes its connection,
// and llama-server stops generating when its client goes away), and only
// then call Stop. Stop sends SIGTERM to the process group, waits StopGrace
// (or until its ctx ends) and then SIGKILLs the group regardless, and returns
// once the leader has been reaped. (While it waits for its clients,
// llama-server no longer answers /health, so the heartbeat watchdog stands
// down once stopping begins.) Stop is idempotent and safe to call
// concurrently; every caller returns when the process is gone.
//
// SIGKILL is safe for the GPU: the driver frees a dead process's memory, but
// not instantly, so the scheduler waits for NVML to show it back before it
// loads the next model.
//
// # Goroutines
//
// A Process runs the supervisor, an output reader per spawned child, at most
// one stopper and, once ready, one heartbeat goroutine. Done is closed only
// after the helpers have returned, and the supervisor returns right after
// closing it; so once Done is closed (and hence once Stop returns) nothing
// of the Process is left running. The tests check this with goleak.
//
// # Requests and one-shot runs
//
// Post and Forward send a JSON request to the child; cancelling ctx closes
// the connection (llama-server then drops the task), and a request whose
// engine dies fails with an error wrapping Err(). The client (Client) keeps
// idle connections for less than llama-server's 5 s keep-alive and sends a
// request once more when it failed on a reused connection before the
// engine answered a byte (retry.go). Run runs a one-shot child
// (Config.OneShot: no port, readiness or heartbeat) to its end through the
// same supervisor, and SIGKILLs its group when ctx ends.
//
// The package needs Linux for its zombie-safe group kill (waitid with
// WNOWAIT); on other Unix systems the group is killed just after the reap.
package runner
