package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Errors returned by Start, WaitReady, Stop and Err. Callers branch on them
// with errors.Is; the returned errors wrap them with the engine name and
// details.
var (
	// ErrBinaryNotFound: Config.Binary is neither an existing path nor a name
	// found in PATH. Returned by Start.
	ErrBinaryNotFound = errors.New("engine binary not found")
	// ErrReadyTimeout: ReadyPath did not answer 200 within ReadyTimeout of
	// Start. Returned by WaitReady (which then stops the engine) and by Err.
	ErrReadyTimeout = errors.New("engine not ready before deadline")
	// ErrHeartbeatLost: ReadyPath did not answer 200 for HeartbeatTimeout
	// after the engine was ready; the process group was SIGKILLed. Err only.
	ErrHeartbeatLost = errors.New("engine missed heartbeats")
	// ErrStopped: we stopped the engine (Stop, or WaitReady's ctx ended).
	ErrStopped = errors.New("engine stopped")
)

// State is where a Process is in its life; see the package doc for the
// transitions. Read it for display only: a state read to decide whether to
// act is a race, act and handle the error instead.
type State string

const (
	StateStarting State = "starting"
	StateReady    State = "ready"
	StateStopping State = "stopping"
	StateExited   State = "exited"
)

// States lists every State in lifecycle order.
func States() []State {
	return []State{StateStarting, StateReady, StateStopping, StateExited}
}

// Defaults applied by Start to zero Config fields.
const (
	DefaultReadyPath         = "/health"
	DefaultReadyTimeout      = 60 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultHeartbeatTimeout  = 30 * time.Second
	DefaultStopGrace         = 10 * time.Second
	DefaultLogLines          = 200
)

const (
	// readyPollInterval is how often WaitReady asks ReadyPath: llama-server
	// loads a small model in ~160 ms, so readiness is noticed within tens of
	// milliseconds.
	readyPollInterval = 10 * time.Millisecond
	// maxSpawns bounds the spawns of one Process when the chosen port turns
	// out to be taken between our probe and the engine's bind.
	maxSpawns = 3
	// outputDrainWait bounds how long the supervisor waits for the output pipe
	// to reach EOF after the group was killed (a process that escaped the
	// group may hold it open forever).
	outputDrainWait = 2 * time.Second
	// exitNoticeWait is how long a failed request waits for the supervisor to
	// notice that the engine died, so the error can say so.
	exitNoticeWait = time.Second
	// exitTailLines is how many output lines ExitError.Error and the
	// heartbeat/ready errors show.
	exitTailLines = 5
)

// Config describes one engine child. Binary and ArgsFunc are required; zero
// values of the other fields take the defaults noted.
type Config struct {
	Name      string                  // model name, for logs and errors
	Binary    string                  // path, or a name looked up in PATH
	ArgsFunc  func(port int) []string // argv after the binary, given the chosen port
	Env       []string                // extra KEY=VALUE appended to os.Environ()
	ReadyPath string                  // default "/health"; 200 = ready (503 while loading)
	// OwnListener: the binary itself listens on the port (no wrapper that
	// hands the port to a container runtime), so readiness also requires
	// the port's listener to belong to the engine's process group. Set it
	// for engines that bind late (sd-server loads its model first), whose
	// port another program could take meanwhile.
	OwnListener       bool
	ReadyTimeout      time.Duration // default 60s, counted from Start
	HeartbeatInterval time.Duration // default 10s
	HeartbeatTimeout  time.Duration // default 30s; no successful heartbeat for this long → SIGKILL group, Err = ErrHeartbeatLost
	StopGrace         time.Duration // default 10s; SIGTERM → grace → SIGKILL
	LogLines          int           // ring of last output lines (stdout+stderr merged), default 200
	Logger            *slog.Logger  // default: discard
	HTTPClient        *http.Client  // default: a keep-alive transport owned by the Process
	// SpawnedFunc, if set, is called for every child spawned: once from
	// Start, again for each respawn after a taken port (so PID changes).
	// exited is closed once that child has been reaped. Use it for pid
	// records; it must not block or call the Process.
	SpawnedFunc func(pid int, exited <-chan struct{})
	// OneShot marks a child that runs one job to its end (sd-cli): it gets
	// no port (ArgsFunc is given 0), no readiness probe and no heartbeat;
	// the Process counts as ready at once. Its argv, which holds the
	// prompt, is logged at debug level only. Run sets it.
	OneShot bool
	// TermOutput: the child draws progress bars, so a lone carriage return
	// also ends an output line and terminal escapes are removed.
	TermOutput bool
	// PortTakenMarker, if set, is the output line by which the engine says
	// its port is taken (llama-server: "couldn't bind HTTP server socket"):
	// while starting, the child is then respawned on another port. A failed
	// start whose port is found taken counts too.
	PortTakenMarker string
	// LineFunc, if set, sees every output line first, from one goroutine;
	// when it returns false the line is kept out of the Tail ring and the
	// log (progress bars, blank lines).
	LineFunc func(line string) bool
	// EnvFunc, if set, gives more KEY=VALUE for the chosen port, appended
	// after Env (the command engine's ${PORT} in its environment).
	EnvFunc func(port int) []string
}

func (c *Config) setDefaults() {
	if c.ReadyPath == "" {
		c.ReadyPath = DefaultReadyPath
	}
	if !strings.HasPrefix(c.ReadyPath, "/") {
		c.ReadyPath = "/" + c.ReadyPath
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.StopGrace <= 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.LogLines <= 0 {
		c.LogLines = DefaultLogLines
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// ExitError reports an engine that exited on its own, before or after it was
// ready. Code is the exit status, or -1 when a signal killed it (Signal then
// names it, e.g. "killed"). Tail holds the last output lines; with the real
// llama-server it can lack the last lines, or be empty, when the process
// exits within milliseconds (its logger is not flushed at exit), so do not
// make decisions that need a particular line to be there.
type ExitError struct {
	Name   string
	Code   int
	Signal string
	Tail   []string
	// BeforeReady: it exited while starting (bad model, bad flags, out of
	// memory while loading), as opposed to a crash while serving.
	BeforeReady bool
}

func (e *ExitError) Error() string {
	return exitText(e.Name, e.Code, e.Signal, tailSummary(e.Tail))
}

// exitText says how engine name ended: "engine NAME exited with code N" or
// "… killed by signal S", then ": summary" when there is one.
func exitText(name string, code int, signal, summary string) string {
	var b strings.Builder
	b.WriteString("engine ")
	b.WriteString(name)
	if signal != "" {
		b.WriteString(" killed by signal ")
		b.WriteString(signal)
	} else {
		b.WriteString(" exited with code ")
		b.WriteString(strconv.Itoa(code))
	}
	if summary != "" {
		b.WriteString(": ")
		b.WriteString(summary)
	}
	return b.String()
}

// tailSummary joins the last few non-empty lines for an error message.
func tailSummary(lines []string) string {
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < exitTailLines; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append(keep, l)
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return strings.Join(keep, " | ")
}

// Process is one supervised engine child. Create it with Start. All methods
// are safe for concurrent use.
type Process struct {
	cfg     Config
	bin     string // resolved Binary
	log     *slog.Logger
	client  *http.Client
	ownTr   *http.Transport // non-nil when client is ours; closed on exit
	ring    *ring
	started time.Time

	// lifeCtx is cancelled when the leader is reaped; it bounds health probes.
	lifeCtx    context.Context
	lifeCancel context.CancelFunc

	exitedCh chan struct{} // closed by the supervisor once the leader is reaped
	doneCh   chan struct{} // closed after exitedCh, once every helper goroutine returned
	killCh   chan struct{} // closed to cut the stop grace short
	killOnce sync.Once
	wg       sync.WaitGroup // helpers: output readers, stopper, heartbeat
	// foreignSeen: a foreign listener on the port was logged (ownsPort).
	foreignSeen atomic.Bool

	mu       sync.Mutex
	state    State // written under mu
	child    *child
	spawns   int
	cause    error // why we are stopping; set once, under mu
	stopping bool  // the stopper goroutine was started
	err      error // final; set when state becomes exited
}

// child is one spawned OS process; a Process has one at a time, more only
// when a taken port forces a respawn during starting.
type child struct {
	cmd        *exec.Cmd
	pid        int
	port       int
	out        *os.File      // read end of the merged stdout/stderr pipe
	outDone    chan struct{} // closed when the reader returned
	reapedCh   chan struct{} // closed by the supervisor after the reap
	reaped     bool          // under Process.mu: no more signals to pid
	bindFailed bool          // under Process.mu: output showed PortTakenMarker
}

// Start spawns the engine and returns at once; call WaitReady next. The child
// gets a free 127.0.0.1 port (passed to ArgsFunc), its own process group,
// and stdin from /dev/null; its merged output feeds the Tail ring and the
// Logger at debug level. ctx bounds only the spawn, not the process's life.
//
// Returns an error wrapping ErrBinaryNotFound when Binary cannot be found.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start engine %s: %w", cfg.Name, err)
	}
	if cfg.Binary == "" {
		return nil, fmt.Errorf("start engine %s: %w: empty binary path", cfg.Name, ErrBinaryNotFound)
	}
	if cfg.ArgsFunc == nil {
		return nil, fmt.Errorf("start engine %s: no ArgsFunc", cfg.Name)
	}
	cfg.setDefaults()
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("start engine %s: %w: %w", cfg.Name, ErrBinaryNotFound, err)
		}
		return nil, fmt.Errorf("start engine %s: %w", cfg.Name, err)
	}
	p := &Process{
		cfg:      cfg,
		bin:      bin,
		log:      cfg.Logger.With("model", cfg.Name),
		ring:     newRing(cfg.LogLines),
		started:  time.Now(),
		state:    StateStarting,
		exitedCh: make(chan struct{}),
		doneCh:   make(chan struct{}),
		killCh:   make(chan struct{}),
	}
	if cfg.OneShot {
		p.state = StateReady // nothing to wait for: the run is the job
	}
	p.lifeCtx, p.lifeCancel = context.WithCancel(context.Background())
	if cfg.HTTPClient != nil {
		p.client = cfg.HTTPClient
	} else {
		p.ownTr = newTransport()
		p.client = &http.Client{Transport: &reuseRetry{base: p.ownTr}}
	}
	p.mu.Lock()
	c, err := p.spawnLocked()
	p.mu.Unlock()
	if err != nil {
		p.lifeCancel()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", ErrBinaryNotFound, err)
		}
		return nil, fmt.Errorf("start engine %s: %w", cfg.Name, err)
	}
	p.spawned(c)
	go p.supervise(c)
	return p, nil
}

func newTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     engineIdleTimeout,
		DisableCompression:  true, // loopback; and SSE must not be buffered by a decompressor
	}
}

// spawnLocked starts one child on a fresh port. Called with p.mu held (so a
// concurrent Stop either sees the new child or prevents the spawn).
func (p *Process) spawnLocked() (*child, error) {
	port := 0
	if !p.cfg.OneShot {
		var err error
		if port, err = freePort(); err != nil {
			return nil, fmt.Errorf("pick port: %w", err)
		}
	}
	c, err := p.startChild(port)
	if err != nil {
		releasePort(port)
		return nil, err
	}
	return c, nil
}

// startChild starts the engine on port with its output on a pipe.
func (p *Process) startChild(port int) (*child, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd := exec.Command(p.bin, p.cfg.ArgsFunc(port)...)
	cmd.Env = append(os.Environ(), p.cfg.Env...)
	if p.cfg.EnvFunc != nil {
		cmd.Env = append(cmd.Env, p.cfg.EnvFunc(port)...)
	}
	cmd.Stdout = w
	cmd.Stderr = w
	// Own process group: signals reach the engine and anything it forks,
	// and a Ctrl-C on our terminal does not reach the engine behind our back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close() // the child holds its copy
	c := &child{cmd: cmd, pid: cmd.Process.Pid, port: port, out: r, outDone: make(chan struct{}), reapedCh: make(chan struct{})}
	p.child = c
	p.spawns++
	if p.cfg.OneShot {
		// The argv holds the prompt: only debug logs show it.
		p.log.Info("engine run started", "pid", c.pid, "binary", p.bin)
		p.log.Debug("engine run argv", "pid", c.pid, "args", redactArgs(cmd.Args[1:]))
	} else {
		p.log.Info("engine started", "pid", c.pid, "port", port, "binary", p.bin, "args", redactArgs(cmd.Args[1:]))
	}
	p.wg.Add(1)
	go p.readOutput(c)
	return c, nil
}

// portInUse reports whether something listens on the loopback port.
func portInUse(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return false
}

// spawned tells Config.SpawnedFunc about c. Called without p.mu.
func (p *Process) spawned(c *child) {
	if p.cfg.SpawnedFunc != nil {
		p.cfg.SpawnedFunc(c.pid, c.reapedCh)
	}
}

// redactArgs hides the values of secret flags (llama-server's --api-key)
// for logging.
func redactArgs(args []string) []string {
	out := append([]string(nil), args...)
	for i, a := range out {
		switch {
		case a == "--api-key" && i+1 < len(out):
			out[i+1] = "REDACTED"
		case strings.HasPrefix(a, "--api-key="):
			out[i] = "--api-key=REDACTED"
		}
	}
	return out
}

// readOutput copies the child's merged output into the ring and the log.
func (p *Process) readOutput(c *child) {
	defer p.wg.Done()
	defer close(c.outDone)
	read := readLines
	if p.cfg.TermOutput {
		read = readTermLines
	}
	read(c.out, func(line string) {
		if p.cfg.LineFunc != nil && !p.cfg.LineFunc(line) {
			return
		}
		p.ring.add(line)
		if m := p.cfg.PortTakenMarker; m != "" && strings.Contains(line, m) {
			p.mu.Lock()
			c.bindFailed = true
			p.mu.Unlock()
		}
		p.log.Debug("engine output", "pid", c.pid, "line", line)
	})
}

// supervise waits for each child to exit, respawns on a taken port during
// starting, and finally records Err and closes Done.
func (p *Process) supervise(c *child) {
	for {
		var waitErr error
		if canWaitWithoutReap {
			waitExited(c.pid)
			p.mu.Lock()
			// The leader is a zombie: kill whatever else is left in its
			// group (grandchildren) while the group ID cannot be reused.
			killGroup(c.pid, syscall.SIGKILL)
			c.reaped = true
			p.mu.Unlock()
			waitErr = c.cmd.Wait()
		} else {
			waitErr = c.cmd.Wait()
			p.mu.Lock()
			c.reaped = true
			killGroup(c.pid, syscall.SIGKILL)
			p.mu.Unlock()
		}

		// cmd.Stdout is our own *os.File, so cmd.Wait did not wait for the
		// output; drain it now that the group is dead.
		select {
		case <-c.outDone:
		case <-time.After(outputDrainWait):
			p.log.Warn("engine output still open after exit; closing it", "pid", c.pid)
		}
		c.out.Close() // unblocks the reader if something still holds the pipe
		<-c.outDone
		releasePort(c.port) // the group is dead: nothing of ours holds it
		close(c.reapedCh)
		p.mu.Lock()
		beforeReady := p.state == StateStarting
		p.mu.Unlock()
		exitErr := p.exitError(c.cmd.ProcessState, waitErr, beforeReady)
		// llama-server logs from a background thread that it does not
		// flush at exit (common/log.cpp leaks the logger on purpose,
		// llama.cpp issue 22142): on a fast exit its last lines, under load
		// all of them, can be lost. So a taken port is also recognised by
		// finding it taken now.
		// Any exit before ready is a failure, code 0 included: sd-server
		// returns 0 without a word when its port is taken.
		failed := c.cmd.ProcessState == nil || !c.cmd.ProcessState.Success() || beforeReady
		taken := failed && !p.cfg.OneShot && portInUse(c.port)

		p.mu.Lock()
		if p.state == StateStarting && p.cause == nil && (c.bindFailed || taken) && p.spawns < maxSpawns {
			p.log.Warn("engine port taken; respawning on another port", "pid", c.pid, "port", c.port, "spawn", p.spawns+1)
			nc, err := p.spawnLocked()
			if err == nil {
				p.mu.Unlock()
				p.spawned(nc)
				c = nc
				continue
			}
			exitErr = fmt.Errorf("respawn engine %s after taken port: %w", p.cfg.Name, err)
		}
		p.err = exitErr
		if p.cause != nil {
			p.err = p.cause
		}
		p.state = StateExited
		p.mu.Unlock()

		p.log.Info("engine exited", "pid", c.pid, "err", p.err)
		close(p.exitedCh)
		p.lifeCancel()
		p.wg.Wait()
		if p.ownTr != nil {
			p.ownTr.CloseIdleConnections()
		}
		close(p.doneCh)
		return
	}
}

// exitError describes how the leader ended.
func (p *Process) exitError(ps *os.ProcessState, waitErr error, beforeReady bool) error {
	if ps == nil {
		return fmt.Errorf("wait engine %s: %w", p.cfg.Name, waitErr)
	}
	e := &ExitError{Name: p.cfg.Name, Code: -1, Tail: p.ring.lines(), BeforeReady: beforeReady}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal().String()
		return e
	}
	e.Code = ps.ExitCode()
	return e
}

// killGroup signals the process group led by pid. Caller holds p.mu and has
// checked the leader is not reaped.
func killGroup(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig) // ESRCH: already gone
}

// signalLocked signals the current child's group unless it was reaped.
func (p *Process) signalLocked(sig syscall.Signal) {
	if c := p.child; c != nil && !c.reaped {
		killGroup(c.pid, sig)
	}
}

// WaitReady polls ReadyPath every 10ms until it answers 200, then starts the
// heartbeat watchdog and returns nil. It returns:
//   - *ExitError if the engine exits first (a taken port is retried
//     transparently, up to 3 spawns);
//   - an error wrapping ErrReadyTimeout once ReadyTimeout has passed since
//     Start; the engine is stopped before WaitReady returns;
//   - ctx.Err() (wrapped) if ctx ends first; the engine is stopped too;
//   - Err() (e.g. ErrStopped) if the engine was stopped meanwhile.
//
// Calling it again after success returns nil at once.
func (p *Process) WaitReady(ctx context.Context) error {
	deadline := p.started.Add(p.cfg.ReadyTimeout)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	tick := time.NewTicker(readyPollInterval)
	defer tick.Stop()
	for {
		p.mu.Lock()
		st := p.state
		p.mu.Unlock()
		switch st {
		case StateReady:
			return nil
		case StateStopping, StateExited:
			<-p.doneCh
			return p.Err()
		}
		if p.probe(ctx, min(time.Second, time.Until(deadline))) && p.ownsPort() {
			if p.markReady() {
				return nil
			}
			continue // stopped meanwhile; the switch above reports it
		}
		select {
		case <-p.doneCh:
			return p.Err()
		case <-ctx.Done():
			err := fmt.Errorf("wait ready engine %s: %w", p.cfg.Name, ctx.Err())
			p.stop(context.WithoutCancel(ctx), fmt.Errorf("%w: %w", ErrStopped, err))
			return err
		case <-timer.C:
			err := fmt.Errorf("engine %s: %w (%s)", p.cfg.Name, ErrReadyTimeout, p.cfg.ReadyTimeout)
			if s := tailSummary(p.ring.lines()); s != "" {
				err = fmt.Errorf("%w; last output: %s", err, s)
			}
			p.log.Warn("engine not ready in time; stopping it", "timeout", p.cfg.ReadyTimeout)
			p.stop(context.WithoutCancel(ctx), err)
			return err
		case <-tick.C:
		}
	}
}

// markReady moves starting → ready and starts the heartbeat. It reports
// false if the process left starting meanwhile.
func (p *Process) markReady() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != StateStarting {
		return p.state == StateReady
	}
	p.state = StateReady
	p.log.Info("engine ready", "pid", p.child.pid, "port", p.child.port, "after", time.Since(p.started).Round(time.Millisecond))
	p.wg.Add(1)
	go p.heartbeat()
	return true
}

// ownsPort reports whether the listener that answered on the engine's port
// is the engine's (listenerOwner), where Config.OwnListener asks; it logs
// once a listener that is not.
func (p *Process) ownsPort() bool {
	if !p.cfg.OwnListener {
		return true
	}
	p.mu.Lock()
	c := p.child
	p.mu.Unlock()
	ours, known := listenerOwner(c.port, c.pid)
	if known && !ours && p.foreignSeen.CompareAndSwap(false, true) {
		p.log.Warn("another program answers on the engine's port; waiting for the engine's own listener", "port", c.port)
	}
	return ours || !known
}

// probe GETs ReadyPath once and reports whether it answered 200. The request
// is bounded by limit and by the process's exit.
func (p *Process) probe(ctx context.Context, limit time.Duration) bool {
	if limit <= 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	defer context.AfterFunc(p.lifeCtx, cancel)()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+p.cfg.ReadyPath, nil)
	if err != nil {
		return false
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	drainClose(resp)
	return resp.StatusCode == http.StatusOK
}

// Done is closed once the engine has exited, been reaped, and every
// goroutine of this Process has returned.
func (p *Process) Done() <-chan struct{} { return p.doneCh }

// Err says why the engine ended; nil until Done is closed. See the package
// doc for the values.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// State returns the current state, for display.
func (p *Process) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Stop ends the engine: SIGTERM to its process group, then up to StopGrace
// (less if ctx ends first), then SIGKILL to the group; it returns once the
// leader is reaped and the Process's goroutines have returned. Stop is
// idempotent and safe to call concurrently; it returns nil, and Err tells why
// the engine ended (ErrStopped unless it had already exited on its own or
// been killed for another reason). Drain in-flight requests first: see the
// package doc.
func (p *Process) Stop(ctx context.Context) error {
	p.stop(ctx, ErrStopped)
	return nil
}

// stop records cause (unless another cause came first), starts the stopper
// once, and waits for Done; when ctx ends first it cuts the grace short.
func (p *Process) stop(ctx context.Context, cause error) {
	p.mu.Lock()
	if p.state != StateExited {
		if p.cause == nil {
			p.cause = cause
		}
		p.state = StateStopping
		if !p.stopping {
			p.stopping = true
			p.wg.Add(1)
			go p.stopper()
		}
	}
	p.mu.Unlock()
	select {
	case <-p.doneCh:
		return
	case <-ctx.Done():
		p.killNow()
	}
	<-p.doneCh
}

// stopper sends SIGTERM, waits the grace, then SIGKILL.
func (p *Process) stopper() {
	defer p.wg.Done()
	p.mu.Lock()
	p.log.Info("stopping engine", "pid", p.child.pid, "grace", p.cfg.StopGrace)
	p.signalLocked(syscall.SIGTERM)
	p.mu.Unlock()
	t := time.NewTimer(p.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-p.exitedCh:
		return
	case <-t.C:
		p.log.Warn("engine ignored SIGTERM; killing it", "grace", p.cfg.StopGrace)
	case <-p.killCh:
	}
	p.mu.Lock()
	p.signalLocked(syscall.SIGKILL)
	p.mu.Unlock()
}

func (p *Process) killNow() { p.killOnce.Do(func() { close(p.killCh) }) }

// kill records cause and SIGKILLs the group without grace (hung engine).
func (p *Process) kill(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == StateExited {
		return
	}
	if p.cause == nil {
		p.cause = cause
	}
	p.state = StateStopping
	p.signalLocked(syscall.SIGKILL)
}

// PID returns the process ID (and process group ID) of the current child.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.child.pid
}

// Port returns the loopback port the current child was told to listen on.
func (p *Process) Port() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.child.port
}

// URL returns the engine's base URL, http://127.0.0.1:PORT.
func (p *Process) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(p.Port())
}

// Tail returns a copy of the last LogLines output lines, oldest first.
func (p *Process) Tail() []string { return p.ring.lines() }

// Name returns Config.Name.
func (p *Process) Name() string { return p.cfg.Name }
