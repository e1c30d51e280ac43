// Package sdcpp is the engine for stable-diffusion.cpp: the one-shot sd-cli
// (one process per job, through runner.Run) and the sd-server. It holds
// their argv, progress parsing, error classification, the parameters of
// image jobs, the result shape with its image files, and sd-server's client.
package sdcpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/runner"
)

// The engines' registry names (config: models.diffusion[].config.engine).
const (
	EngineSDCLI    = "sd-cli"
	EngineSDServer = "sd-server"
)

// Options are one diffusion model's engine settings.
type Options struct {
	Engine   string // EngineSDCLI (default) or EngineSDServer
	Files    Files
	Defaults Defaults
	Extra    []string      // appended to the engine's argv
	Timeout  time.Duration // per job; 0 = none
}

// Launcher starts stable-diffusion.cpp engines: a "virtual
// instance" for sd-cli, which runs one process per job, or a supervised
// sd-server. The instance's reservation in the ledger is what holds the
// job's VRAM for the run, so diffusion models have one slot.
type Launcher struct {
	CLIBinary    string // inference.sd_path
	ServerBinary string // inference.sd_server_path
	// Options holds each model's settings by model name.
	Options map[string]Options
	// ImageDir is where jobs' images go: ImageDir/JOB_ID/N.png.
	ImageDir string
	// Runner is the template of sd-server processes: timeouts, heartbeat,
	// logger. Its Logger also logs sd-cli runs.
	Runner runner.Config
	// Records, when set, keeps a pid record per engine process (sd-cli
	// runs included) so that a restart after a crash of VramCram stops them.
	Records *runner.Records
	// SeedFunc picks the seed of a job that gives none; default random.
	SeedFunc func() int64
}

func (l *Launcher) options(name string) (Options, string, error) {
	o, ok := l.Options[name]
	if !ok {
		return o, "", fmt.Errorf("no engine options for model %q", name)
	}
	if o.Engine == EngineSDServer {
		return o, l.ServerBinary, nil
	}
	return o, l.CLIBinary, nil
}

// Check reports whether m can run: its engine binary and every model file
// exist.
func (l *Launcher) Check(m engine.Spec) error {
	o, bin, err := l.options(m.Model)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath(bin); err != nil {
		key := "inference.sd_path"
		if o.Engine == EngineSDServer {
			key = "inference.sd_server_path"
		}
		return fmt.Errorf("%s binary %q not found (%s)", engineName(o.Engine), bin, key)
	}
	files := o.Files.List()
	if len(files) == 0 {
		return errors.New("no model file configured")
	}
	for _, f := range files {
		fi, err := os.Stat(f.Path)
		if err != nil {
			return fmt.Errorf("model file %q not found", f.Path)
		}
		if fi.IsDir() && f.Flag != "-m" { // -m may name a diffusers directory
			return fmt.Errorf("model path %q is a directory", f.Path)
		}
	}
	return nil
}

func engineName(e string) string {
	if e == EngineSDServer {
		return EngineSDServer
	}
	return EngineSDCLI
}

// Launch returns m's engine: for sd-cli at once (nothing runs until a job
// does), for sd-server once its process runs.
func (l *Launcher) Launch(ctx context.Context, m engine.Spec) (engine.Engine, error) {
	o, bin, err := l.options(m.Model)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", m.Model, err)
	}
	if l.ImageDir == "" {
		return nil, fmt.Errorf("launch %s: no image directory", m.Model)
	}
	if o.Engine == EngineSDServer {
		return l.launchServer(ctx, m, o, bin)
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("launch %s: %w: %w", m.Model, runner.ErrBinaryNotFound, err)
	}
	e := &sdCLIEngine{l: l, name: m.Model, bin: bin, o: o, env: m.DeviceEnv(), done: make(chan struct{})}
	e.stopCtx, e.stopCancel = context.WithCancel(context.Background())
	return e, nil
}

func (l *Launcher) launchServer(ctx context.Context, m engine.Spec, o Options, bin string) (engine.Engine, error) {
	cfg := l.Runner
	cfg.Name = m.Model
	cfg.Binary = bin
	cfg.ReadyPath = ServerReadyPath
	cfg.OwnListener = true // it binds only once its model is loaded: another program could take the port meanwhile
	cfg.Env = append(append([]string(nil), cfg.Env...), m.DeviceEnv()...)
	d := o.Defaults
	cfg.ArgsFunc = ServerArgs(ServerOptions{
		Files: o.Files, Width: d.Width, Height: d.Height, Steps: d.Steps, CFGScale: d.CFGScale,
		SamplingMethod: d.SamplingMethod, Scheduler: d.Scheduler, Extra: o.Extra,
	})
	if l.Records != nil {
		cfg.SpawnedFunc = func(pid int, exited <-chan struct{}) { l.Records.Track(m.Model, pid, exited) }
	}
	p, err := runner.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", m.Model, err)
	}
	return &sdServerEngine{Process: p, l: l, o: o}, nil
}

func (l *Launcher) logger() *slog.Logger {
	if l.Runner.Logger != nil {
		return l.Runner.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// request decodes job's params and decides every value.
func (l *Launcher) request(job engine.Job, o Options) (Request, error) {
	p, err := ParseParams(job.Params)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %w", engine.ErrRejected, err)
	}
	return p.Resolve(job.Prompt, o.Defaults, l.SeedFunc), nil
}

func sdRequest(r Request) ImageRequest {
	return ImageRequest{
		Prompt: r.Prompt, NegativePrompt: r.NegativePrompt, Width: r.Width, Height: r.Height,
		Steps: r.Steps, CFGScale: r.CFGScale, Seed: r.Seed, Count: r.Count,
		SamplingMethod: r.SamplingMethod, Scheduler: r.Scheduler,
	}
}

// sdCLIEngine is the virtual instance of an sd-cli model: ready at once,
// one sd-cli process per job. Done closes once Stop was called and the
// running process (if any) is gone.
type sdCLIEngine struct {
	l    *Launcher
	name string
	bin  string
	o    Options
	env  []string // CUDA_VISIBLE_DEVICES of its placement

	stopOnce   sync.Once
	stopCtx    context.Context // ended by Stop: running processes are killed
	stopCancel context.CancelFunc
	done       chan struct{} // closed once stopped and no run is left

	mu      sync.Mutex
	pid     int  // of the running sd-cli, 0 between jobs
	lastPID int  // of the latest sd-cli, for the wait for its memory
	running int  // runs in progress
	stopped bool // Stop was called: no new runs
}

func (e *sdCLIEngine) WaitReady(context.Context) error { return nil }

// LastPID is the latest sd-cli process, running or not: after an eviction
// the next load waits for its memory to show free.
func (e *sdCLIEngine) LastPID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastPID
}

// OneShot marks an engine whose failures are its job's process, not the
// engine's: nothing to wait for before recording them.
func (e *sdCLIEngine) OneShot()              {}
func (e *sdCLIEngine) Done() <-chan struct{} { return e.done }

// Err is why the instance ended: it only ends when stopped.
func (e *sdCLIEngine) Err() error {
	select {
	case <-e.done:
		return runner.ErrStopped
	default:
		return nil
	}
}

// PID is the running sd-cli's process ID, 0 between jobs.
func (e *sdCLIEngine) PID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pid
}

// Stop kills a running job's process (the scheduler drains first, so there
// is none unless it is shutting down) and waits until it is reaped.
func (e *sdCLIEngine) Stop(ctx context.Context) error {
	e.stopOnce.Do(func() {
		e.stopCancel()
		e.mu.Lock()
		e.stopped = true
		idle := e.running == 0
		e.mu.Unlock()
		if idle {
			close(e.done)
		}
	})
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", e.name, ctx.Err())
	}
}

// begin registers a run; it fails once Stop was called.
func (e *sdCLIEngine) begin() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return false
	}
	e.running++
	return true
}

func (e *sdCLIEngine) end() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running--
	e.pid = 0
	if e.stopped && e.running == 0 {
		close(e.done)
	}
}

// Run generates job's images with one sd-cli process, publishing its
// sampling steps as progress. The process is killed (its whole group) when
// ctx ends or the model's timeout passes.
func (e *sdCLIEngine) Run(ctx context.Context, job engine.Job, progress func(engine.Progress)) ([]byte, error) {
	req, err := e.l.request(job, e.o)
	if err != nil {
		return nil, err
	}
	if !e.begin() {
		return nil, fmt.Errorf("run %s: %w", e.name, runner.ErrStopped)
	}
	defer e.end()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := context.AfterFunc(e.stopCtx, func() { cancel(runner.ErrStopped) })
	defer stopWatch()
	if e.o.Timeout > 0 {
		var tcancel context.CancelFunc
		ctx, tcancel = context.WithTimeoutCause(ctx, e.o.Timeout, fmt.Errorf("timed out after %s", e.o.Timeout))
		defer tcancel()
	}
	return runAndCollect(e.l.ImageDir, job.ID, req, func(dir string) error {
		return e.runCLI(ctx, dir, req, progress)
	})
}

func (e *sdCLIEngine) runCLI(ctx context.Context, dir string, req Request, progress func(engine.Progress)) error {
	steps := newStepCounter(req.Steps, req.Count)
	ireq, removePrompts, err := PromptFiles(dir, sdRequest(req))
	if err != nil {
		return err
	}
	defer removePrompts()
	err = RunCLI(ctx, CLIRun{
		Runner: e.l.Runner,
		Name:   e.name,
		Binary: e.bin,
		Args:   CLIArgs(e.o.Files, ireq, filepath.Join(dir, cliOutputName), e.o.Extra),
		Env:    e.env,
		Logger: e.l.logger().With("engine", EngineSDCLI),
		ProgressFunc: func(step, total int) {
			if p, ok := steps.add(step, total); ok {
				progress(p)
			}
		},
		SpawnedFunc: func(pid int, exited <-chan struct{}) {
			e.mu.Lock()
			e.pid, e.lastPID = pid, pid
			e.mu.Unlock()
			if e.l.Records != nil {
				e.l.Records.Track(e.name, pid, exited)
			}
		},
	})
	if err == nil {
		return collectCLIOutput(dir, req.Count)
	}
	var ce *CLIError
	if errors.As(err, &ce) && ce.BadInput() {
		return fmt.Errorf("%w: %w", engine.ErrRejected, err)
	}
	return err
}

// stepCounter turns sd-cli's progress bars into a job's progress: the
// sampling bar (total = steps) restarts for each image, so the job has
// steps × count steps. Other bars (VAE tiles) are ignored.
type stepCounter struct {
	steps, count int
	round, last  int
}

func newStepCounter(steps, count int) *stepCounter {
	return &stepCounter{steps: steps, count: max(count, 1)}
}

func (c *stepCounter) add(step, total int) (engine.Progress, bool) {
	if total != c.steps || step < 1 {
		return engine.Progress{}, false
	}
	if step <= c.last {
		c.round++
	}
	c.last = step
	all := c.steps * c.count
	return engine.Progress{Step: min(c.round*c.steps+step, all), Steps: all}, true
}

// sdServerEngine runs diffusion jobs on one sd-server process.
type sdServerEngine struct {
	*runner.Process
	l *Launcher
	o Options
}

// WaitReady waits for sd-server to answer. An exit before that is a failed
// load whatever its code: sd-server returns 0 without a word when it cannot
// listen (the runner has then tried other ports already).
func (e *sdServerEngine) WaitReady(ctx context.Context) error {
	err := e.Process.WaitReady(ctx)
	var ee *runner.ExitError
	if errors.As(err, &ee) && ee.BeforeReady && ee.Code == 0 && ee.Signal == "" {
		return fmt.Errorf("sd-server exited before it was ready (code 0: it could not listen): %w", err)
	}
	return err
}

// Run sends the job to POST /v1/images/generations. sd-server prints no
// per-request progress that could be told apart, so none is published.
func (e *sdServerEngine) Run(ctx context.Context, job engine.Job, progress func(engine.Progress)) ([]byte, error) {
	req, err := e.l.request(job, e.o)
	if err != nil {
		return nil, err
	}
	if req.Steps > ServerMaxSteps {
		return nil, fmt.Errorf("%w: %w", engine.ErrRejected, &engine.FieldError{Field: "params.steps",
			Msg: fmt.Sprintf("%d steps: sd-server runs at most %d (it would clamp without a word)", req.Steps, ServerMaxSteps)})
	}
	if e.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, e.o.Timeout, fmt.Errorf("timed out after %s", e.o.Timeout))
		defer cancel()
	}
	return runAndCollect(e.l.ImageDir, job.ID, req, func(dir string) error {
		images, err := GenerateImages(ctx, e.Process, sdRequest(req))
		var he *runner.HTTPError
		var fe *engine.FieldError
		if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 || errors.As(err, &fe) {
			return fmt.Errorf("%w by sd-server: %w", engine.ErrRejected, err)
		}
		if err != nil {
			return err
		}
		return writeImages(dir, images)
	})
}

// Result is the stored result of a diffusion job. The pixels are
// not in it: Images name files in the job's image directory, and the API
// fills B64 (or serves the files) when asked.
type Result struct {
	Type     engine.Kind `json:"type"` // "diffusion"
	Images   []Image     `json:"images"`
	Seed     int64       `json:"seed"`
	Width    int         `json:"width"`
	Height   int         `json:"height"`
	Steps    int         `json:"steps,omitempty"`
	CFGScale float64     `json:"cfg_scale"`
}

// Image is one image of a result.
type Image struct {
	Format string `json:"format"`         // "png"
	File   string `json:"file,omitempty"` // name in the job's image directory
	B64    string `json:"b64,omitempty"`  // base64 of the file; set by the API, never stored
	URL    string `json:"url,omitempty"`  // set by the API
}

// cliOutputName is the -o given to sd-cli in the job's directory; it
// writes out.png, or out_0.png, out_1.png, … (older releases: out.png,
// out_2.png, …) for several images.
const cliOutputName = "out.png"

// imageFile is the stored name of a job's n-th image.
func imageFile(n int) string { return strconv.Itoa(n) + ".png" }

var storedImageName = regexp.MustCompile(`^[0-9]{1,3}\.png$`)

// JobImageDir returns the directory of job id's images under imageDir. It
// fails for an ID that is not a valid job ID (so never a path outside).
func JobImageDir(imageDir, id string) (string, error) {
	if imageDir == "" || !validID(id) {
		return "", fmt.Errorf("no image directory for job %q", id)
	}
	return filepath.Join(imageDir, id), nil
}

// ImagePath returns the path of file in job id's image directory; file must
// be a name this package stores ("0.png").
func ImagePath(imageDir, id, file string) (string, error) {
	dir, err := JobImageDir(imageDir, id)
	if err != nil {
		return "", err
	}
	if !storedImageName.MatchString(file) {
		return "", fmt.Errorf("bad image file name %q", file)
	}
	return filepath.Join(dir, file), nil
}

// RemoveJobImages deletes job id's image directory, if any.
func RemoveJobImages(imageDir, id string) error {
	dir, err := JobImageDir(imageDir, id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove images of job %s: %w", id, err)
	}
	return nil
}

// runAndCollect gives generate an empty directory for the job, then checks
// the images it left there (N.png, each a PNG) and returns the result
// document. On any failure the directory is removed.
func runAndCollect(imageDir, id string, req Request, generate func(dir string) error) (res []byte, err error) {
	dir, err := JobImageDir(imageDir, id)
	if err != nil {
		return nil, err
	}
	// A retried job starts over: drop what an earlier attempt left.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear images of job %s: %w", id, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create images dir of job %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if err := generate(dir); err != nil {
		return nil, err
	}
	out := Result{Type: engine.KindDiffusion, Seed: req.Seed, Steps: req.Steps, CFGScale: req.CFGScale}
	for n := 0; ; n++ {
		b, err := os.ReadFile(filepath.Join(dir, imageFile(n)))
		if errors.Is(err, os.ErrNotExist) && n > 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read image %d of job %s: %w", n, id, err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("image %d of job %s is not a PNG: %w", n, id, err)
		}
		if n == 0 {
			out.Width, out.Height = cfg.Width, cfg.Height
		}
		out.Images = append(out.Images, Image{Format: "png", File: imageFile(n)})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}

// validID reports whether id can name a job's directory: what store.ValidID
// accepts (lower-case letters, digits, '-' and '_' after the first byte, at
// most 64 bytes), so never a path outside.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// cliOutput matches the files sd-cli writes for -o out.png.
var cliOutput = regexp.MustCompile(`^out(?:_([0-9]+))?\.png$`)

// collectCLIOutput renames sd-cli's files to 0.png, 1.png, … in their
// order, and checks that all count images are there.
func collectCLIOutput(dir string, count int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read engine output: %w", err)
	}
	type file struct {
		name string
		idx  int
	}
	var files []file
	for _, e := range entries {
		m := cliOutput.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		idx := -1 // out.png comes first
		if m[1] != "" {
			idx, _ = strconv.Atoi(m[1])
		}
		files = append(files, file{e.Name(), idx})
	}
	if len(files) < max(count, 1) {
		return fmt.Errorf("engine wrote %d of %d images", len(files), max(count, 1))
	}
	sort.Slice(files, func(i, j int) bool { return files[i].idx < files[j].idx })
	for n, f := range files {
		if err := os.Rename(filepath.Join(dir, f.name), filepath.Join(dir, imageFile(n))); err != nil {
			return fmt.Errorf("store image %d: %w", n, err)
		}
	}
	return nil
}

// writeImages stores sd-server's images as 0.png, 1.png, ….
func writeImages(dir string, images [][]byte) error {
	if len(images) == 0 {
		return errors.New("engine returned no image")
	}
	for n, b := range images {
		if err := os.WriteFile(filepath.Join(dir, imageFile(n)), b, 0o640); err != nil {
			return fmt.Errorf("store image %d: %w", n, err)
		}
	}
	return nil
}

// Routes lists the OpenAI paths model serves as durable endpoint/body jobs:
// sd-server's images route; sd-cli serves none (it takes prompt jobs).
func (l *Launcher) Routes(model string) []string {
	if o, ok := l.Options[model]; ok && o.Engine == EngineSDServer {
		return []string{"/v1/images/generations"}
	}
	return nil
}

// Forward relays a durable endpoint/body job's request to sd-server as it
// is; a 4xx answer rejects the job.
func (e *sdServerEngine) Forward(ctx context.Context, path string, body []byte) ([]byte, error) {
	b, err := e.Process.Forward(ctx, path, body)
	var he *runner.HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 {
		return nil, fmt.Errorf("%w by sd-server: %w", engine.ErrRejected, err)
	}
	return b, err
}
