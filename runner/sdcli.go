package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SDFiles are the model files of a stable-diffusion.cpp model. Each non-empty
// one becomes a flag; a full checkpoint needs only Model, split models
// (Flux, SD3.5, Z-Image, …) name their parts.
type SDFiles struct {
	Model          string // -m: a full checkpoint
	DiffusionModel string // --diffusion-model: a standalone diffusion model
	VAE            string // --vae
	ClipL          string // --clip_l
	ClipG          string // --clip_g
	T5XXL          string // --t5xxl
	LLM            string // --llm: an LLM text encoder
}

// SDFile is one model file with its flag.
type SDFile struct {
	Flag string
	Path string
}

// List returns the configured files with their flags, in argv order.
func (f SDFiles) List() []SDFile {
	all := []SDFile{
		{"-m", f.Model}, {"--diffusion-model", f.DiffusionModel}, {"--vae", f.VAE},
		{"--clip_l", f.ClipL}, {"--clip_g", f.ClipG}, {"--t5xxl", f.T5XXL}, {"--llm", f.LLM},
	}
	out := all[:0]
	for _, x := range all {
		if x.Path != "" {
			out = append(out, x)
		}
	}
	return out
}

// Args returns the model flags.
func (f SDFiles) Args() []string {
	var args []string
	for _, x := range f.List() {
		args = append(args, x.Flag, x.Path)
	}
	return args
}

// SDImageRequest is one text-to-image generation with every value decided.
// Empty SamplingMethod and Scheduler leave the engine's defaults.
type SDImageRequest struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Steps          int
	CFGScale       float64
	Seed           int64
	Count          int // images (sd's batch count)
	SamplingMethod string
	Scheduler      string
}

// SDCLIArgs returns sd-cli's argv (after the binary) for one generation that
// writes to output:
//
//	MODEL FLAGS -p PROMPT [-n NEG] -o OUTPUT -W w -H h --steps s --cfg-scale c -s SEED -b N
//	[--sampling-method m] [--scheduler s] extra...
//
// Extra comes last so a per-model setting can override ours (sd-cli keeps
// the last value of a repeated flag). --sampling-method and --scheduler are
// left out when empty: older releases call the latter --schedule.
func SDCLIArgs(files SDFiles, req SDImageRequest, output string, extra []string) []string {
	args := files.Args()
	args = append(args, "-p", req.Prompt)
	if req.NegativePrompt != "" {
		args = append(args, "-n", req.NegativePrompt)
	}
	args = append(args,
		"-o", output,
		"-W", strconv.Itoa(req.Width), "-H", strconv.Itoa(req.Height),
		"--steps", strconv.Itoa(req.Steps),
		"--cfg-scale", strconv.FormatFloat(req.CFGScale, 'f', -1, 64),
		"-s", strconv.FormatInt(req.Seed, 10),
		"-b", strconv.Itoa(max(req.Count, 1)),
	)
	if req.SamplingMethod != "" {
		args = append(args, "--sampling-method", req.SamplingMethod)
	}
	if req.Scheduler != "" {
		args = append(args, "--scheduler", req.Scheduler)
	}
	return append(args, extra...)
}

// CLIRun is one run of a one-shot engine (sd-cli). Binary and Args are
// required.
type CLIRun struct {
	Name      string   // model name, for logs and errors
	Binary    string   // path, or a name looked up in PATH
	Args      []string // argv after the binary
	Env       []string // extra KEY=VALUE appended to os.Environ()
	Logger    *slog.Logger
	TailLines int // output lines kept for the error, default 200 (progress lines are not kept)
	// ProgressFunc, if set, gets every progress bar update the engine
	// prints ("|=====>   | 3/20 - 1.52it/s"): sampling steps, but also VAE
	// tiles and the like; the caller picks. Called from one goroutine.
	ProgressFunc func(step, steps int)
	// SpawnedFunc, if set, is called once the child runs; exited is closed
	// once it has been reaped. Use it for pid records and to learn the PID.
	// It must not block.
	SpawnedFunc func(pid int, exited <-chan struct{})
}

// CLIError reports a one-shot engine that exited with a failure. Code is
// the exit status, or -1 when a signal killed it (Signal names it). Tail
// holds the last output lines, progress bars left out.
type CLIError struct {
	Name   string
	Code   int
	Signal string
	Tail   []string
}

func (e *CLIError) Error() string {
	return exitText(e.Name, e.Code, e.Signal, e.summary())
}

// summary prefers the lines that say what went wrong: sd-cli prints its
// usage (tens of lines) after an argument error, and warnings such as
// "file … not found" come before the final "new_sd_ctx_t failed".
func (e *CLIError) summary() string {
	var keep []string
	for _, l := range e.Tail {
		if isSDErrorLine(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return tailSummary(e.Tail)
	}
	return tailSummary(keep)
}

// sdBadInputMarkers are sd-cli's lines for input that no retry can fix: a
// missing or unreadable model file, an unknown argument or value.
var sdBadInputMarkers = []string{
	"not found",                          // "file X not found"
	"unknown format",                     // "unknown format X": not a model file
	"get sd version from file failed",    // a file that is no diffusion model
	"init model loader from file failed", // unreadable model
	"error: ",                            // argument errors: "error: invalid sample method x"
}

func isSDErrorLine(l string) bool {
	if strings.Contains(l, "[ERROR]") || strings.Contains(l, "new_sd_ctx_t failed") {
		return true
	}
	for _, m := range sdBadInputMarkers {
		if strings.Contains(l, m) {
			return true
		}
	}
	return false
}

// BadInput reports whether the output says the input was wrong (model file,
// arguments) rather than the run failing (crash, out of memory): running the
// same job again cannot help. Only exit code 1 counts, which is what sd-cli
// returns for such input.
func (e *CLIError) BadInput() bool {
	if e.Code != 1 {
		return false
	}
	for _, l := range e.Tail {
		for _, m := range sdBadInputMarkers {
			if strings.Contains(l, m) {
				return true
			}
		}
	}
	return false
}

// RunCLI runs a one-shot engine to its end: own process group, stdin from
// /dev/null, stdout and stderr merged and read line by line (a carriage
// return also ends a line, as progress bars redraw themselves with one).
// When ctx ends the whole group is SIGKILLed; sd-cli has no graceful stop,
// and the driver frees a dead process's GPU memory. When the leader exits
// normally, anything left in its group is killed too.
//
// Returns nil on exit code 0; ctx's cause (wrapped) when ctx ended first;
// *CLIError when it failed; an error wrapping ErrBinaryNotFound when the
// binary is missing.
func RunCLI(ctx context.Context, r CLIRun) error {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.TailLines <= 0 {
		r.TailLines = DefaultLogLines
	}
	log := r.Logger.With("model", r.Name)
	bin, err := exec.LookPath(r.Binary)
	if err != nil {
		if r.Binary == "" || errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("run engine %s: %w: %w", r.Name, ErrBinaryNotFound, err)
		}
		return fmt.Errorf("run engine %s: %w", r.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run engine %s: %w", r.Name, context.Cause(ctx))
	}
	c, err := startCLI(bin, r)
	if err != nil {
		return fmt.Errorf("run engine %s: %w", r.Name, err)
	}
	// The argv holds the prompt: only debug logs show it.
	log.Info("engine run started", "pid", c.pid, "binary", bin)
	log.Debug("engine run argv", "pid", c.pid, "args", redactArgs(r.Args))
	if r.SpawnedFunc != nil {
		r.SpawnedFunc(c.pid, c.reapedCh)
	}
	go c.readOutput(r, log)
	stopWatch := context.AfterFunc(ctx, c.kill)
	c.wait()
	stopWatch()
	if ctx.Err() != nil {
		log.Info("engine run killed", "pid", c.pid, "cause", context.Cause(ctx))
		return fmt.Errorf("run engine %s: killed: %w", r.Name, context.Cause(ctx))
	}
	ps := c.cmd.ProcessState
	if ps == nil {
		return fmt.Errorf("run engine %s: %w", r.Name, c.waitErr)
	}
	if ps.Success() {
		log.Info("engine run finished", "pid", c.pid)
		return nil
	}
	e := &CLIError{Name: r.Name, Code: -1, Tail: c.ring.lines()}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal().String()
	} else {
		e.Code = ps.ExitCode()
	}
	log.Warn("engine run failed", "pid", c.pid, "err", e)
	return e
}

// cliChild is one running one-shot process.
type cliChild struct {
	cmd      *exec.Cmd
	pid      int
	out      *os.File
	ring     *ring
	outDone  chan struct{}
	reapedCh chan struct{}
	waitErr  error

	mu     sync.Mutex
	reaped bool // no more signals to pid once set
}

func startCLI(bin string, r CLIRun) (*cliChild, error) {
	rd, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd := exec.Command(bin, r.Args...)
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		rd.Close()
		w.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", ErrBinaryNotFound, err)
		}
		return nil, err
	}
	w.Close()
	return &cliChild{
		cmd: cmd, pid: cmd.Process.Pid, out: rd, ring: newRing(r.TailLines),
		outDone: make(chan struct{}), reapedCh: make(chan struct{}),
	}, nil
}

// kill SIGKILLs the group unless the leader was reaped (its PID, and so
// the group ID, could then belong to someone else).
func (c *cliChild) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reaped {
		killGroup(c.pid, syscall.SIGKILL)
	}
}

// wait reaps the leader, kills what is left of its group, and drains the
// output, as Process.supervise does.
func (c *cliChild) wait() {
	if canWaitWithoutReap {
		waitExited(c.pid)
		c.mu.Lock()
		killGroup(c.pid, syscall.SIGKILL)
		c.reaped = true
		c.mu.Unlock()
		c.waitErr = c.cmd.Wait()
	} else {
		c.waitErr = c.cmd.Wait()
		c.mu.Lock()
		c.reaped = true
		killGroup(c.pid, syscall.SIGKILL)
		c.mu.Unlock()
	}
	select {
	case <-c.outDone:
	case <-time.After(outputDrainWait):
	}
	c.out.Close()
	<-c.outDone
	close(c.reapedCh)
}

func (c *cliChild) readOutput(r CLIRun, log *slog.Logger) {
	defer close(c.outDone)
	readTermLines(c.out, func(line string) {
		if step, steps, ok := ParseSDProgress(line); ok {
			if r.ProgressFunc != nil {
				r.ProgressFunc(step, steps)
			}
			return
		}
		if strings.TrimSpace(line) == "" {
			return
		}
		c.ring.add(line)
		log.Debug("engine output", "pid", c.pid, "line", line)
	})
}

// ansiEscape matches terminal control sequences such as the "\033[K" that
// ends each progress bar update.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// readTermLines calls fn for each line of rd, split at "\n", "\r\n" or a
// lone "\r" (a redrawn progress bar), without terminal escapes. Lines over
// maxLineLen are cut; reading goes on until EOF so the writer never blocks.
func readTermLines(rd io.Reader, fn func(string)) {
	buf := make([]byte, 16*1024)
	var line []byte
	emit := func() {
		fn(ansiEscape.ReplaceAllString(string(line), ""))
		line = line[:0]
	}
	for {
		n, err := rd.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case '\n', '\r':
				if len(line) > 0 || b == '\n' {
					emit()
				}
			default:
				if len(line) < maxLineLen {
					line = append(line, b)
				}
			}
		}
		if err != nil {
			if len(line) > 0 {
				emit()
			}
			return
		}
	}
}

// sdProgress matches stable-diffusion.cpp's progress bar, printed as
// "\r  |=====>    | 3/20 - 1.52it/s\033[K" (s/it when slower than one step
// a second). Model loading prints a bar of '#' in MB/s, which does not match.
var sdProgress = regexp.MustCompile(`\|[ =>]*\|\s*(\d+)/(\d+)\s*-\s*[0-9.]+(?:s/it|it/s)`)

// ParseSDProgress extracts step and steps from one progress bar update.
func ParseSDProgress(line string) (step, steps int, ok bool) {
	m := sdProgress.FindStringSubmatch(line)
	if m == nil {
		return 0, 0, false
	}
	step, err1 := strconv.Atoi(m[1])
	steps, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil || steps <= 0 || step < 0 || step > steps {
		return 0, 0, false
	}
	return step, steps, true
}
