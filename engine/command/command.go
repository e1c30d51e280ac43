// Package command is the generic engine: any server that speaks OpenAI over
// HTTP (another llama.cpp build, ik_llama, vLLM, whisper.cpp's server, …),
// started from a per-model argv template with ${PORT}-style macros and
// supervised by the runner like every other engine. Durable endpoint/body
// jobs are relayed to it as they are; LLM prompt jobs go to its
// /v1/completions.
package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/runner"
)

// Name is the engine's registry name (config.engine: command).
const Name = "command"

// Host is the address the engine must listen on (${HOST}).
const Host = "127.0.0.1"

// Default routes, by kind, when config.routes is empty.
var (
	DefaultLLMRoutes       = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
	DefaultDiffusionRoutes = []string{"/v1/images/generations"}
)

// DefaultHealthPath is the readiness probe when config.health_path is empty.
const DefaultHealthPath = "/health"

// Options are one command model's settings.
type Options struct {
	Kind        engine.Kind
	Cmd         []string          // argv template; Cmd[0] is the program
	Env         map[string]string // added to the environment; values take the macros
	HealthPath  string            // ready when it answers 200; default DefaultHealthPath
	Routes      []string          // OpenAI paths served; default by Kind
	ModelPath   string            // ${MODEL_PATH}
	ContextSize int               // ${CONTEXT_SIZE}; 0 = ""
}

// routes returns o's routes or the default of its kind.
func (o Options) routes() []string {
	switch {
	case len(o.Routes) > 0:
		return o.Routes
	case o.Kind == engine.KindDiffusion:
		return DefaultDiffusionRoutes
	}
	return DefaultLLMRoutes
}

// Launcher starts command engines through the runner.
type Launcher struct {
	// Options holds each model's settings by model name.
	Options map[string]Options
	// Runner is the template for every process: timeouts, heartbeat, logger.
	Runner runner.Config
	// Records, when set, keeps a pid record per engine.
	Records *runner.Records
}

// vars are the macro values of an instance of model s on port.
func (o Options) vars(s engine.Spec, port int) map[string]string {
	v := map[string]string{
		MacroPort: strconv.Itoa(port), MacroHost: Host, MacroModelPath: o.ModelPath,
		MacroModelName: s.Model, MacroGPUs: s.GPUs(), MacroContextSize: "",
	}
	if o.ContextSize > 0 {
		v[MacroContextSize] = strconv.Itoa(o.ContextSize)
	}
	return v
}

// argv expands the template for port.
func (o Options) argv(s engine.Spec, port int) ([]string, error) {
	vars := o.vars(s, port)
	out := make([]string, len(o.Cmd))
	for k, a := range o.Cmd {
		x, err := Expand(a, vars)
		if err != nil {
			return nil, fmt.Errorf("cmd[%d]: %w", k, err)
		}
		out[k] = x
	}
	return out, nil
}

// env expands the environment for port, in key order.
func (o Options) env(s engine.Spec, port int) ([]string, error) {
	keys := make([]string, 0, len(o.Env))
	for k := range o.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vars := o.vars(s, port)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		x, err := Expand(o.Env[k], vars)
		if err != nil {
			return nil, fmt.Errorf("env.%s: %w", k, err)
		}
		out = append(out, k+"="+x)
	}
	return out, nil
}

func (l *Launcher) options(model string) (Options, error) {
	o, ok := l.Options[model]
	if !ok {
		return o, fmt.Errorf("no engine options for model %q", model)
	}
	if len(o.Cmd) == 0 {
		return o, fmt.Errorf("model %q: empty cmd", model)
	}
	return o, nil
}

// Check reports whether s can start: its program exists, and so does its
// model file when the template uses ${MODEL_PATH}.
func (l *Launcher) Check(s engine.Spec) error {
	o, err := l.options(s.Model)
	if err != nil {
		return err
	}
	argv, err := o.argv(s, 0)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return fmt.Errorf("command %q not found (config.cmd[0])", argv[0])
	}
	if o.ModelPath != "" && usesModelPath(o) {
		if _, err := os.Stat(o.ModelPath); err != nil {
			return fmt.Errorf("model file %q not found", o.ModelPath)
		}
	}
	return nil
}

func usesModelPath(o Options) bool {
	for _, a := range o.Cmd {
		if UsesMacro(a, MacroModelPath) {
			return true
		}
	}
	for _, v := range o.Env {
		if UsesMacro(v, MacroModelPath) {
			return true
		}
	}
	return false
}

// Routes lists the OpenAI paths model serves.
func (l *Launcher) Routes(model string) []string {
	o, ok := l.Options[model]
	if !ok {
		return nil
	}
	return slices.Clone(o.routes())
}

// Launch starts s's server; it returns once the process runs.
func (l *Launcher) Launch(ctx context.Context, s engine.Spec) (engine.Engine, error) {
	o, err := l.options(s.Model)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Model, err)
	}
	// The program and the checks do not depend on the port.
	argv, err := o.argv(s, 0)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Model, err)
	}
	if _, err := o.env(s, 0); err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Model, err)
	}
	cfg := l.Runner
	cfg.Name = s.Model
	cfg.Binary = argv[0]
	cfg.ReadyPath = o.HealthPath
	if cfg.ReadyPath == "" {
		cfg.ReadyPath = DefaultHealthPath
	}
	base := append(append([]string(nil), cfg.Env...), s.DeviceEnv()...)
	cfg.Env = nil
	cfg.EnvFunc = func(port int) []string {
		env, _ := o.env(s, port) // checked above
		return append(append([]string(nil), base...), env...)
	}
	cfg.ArgsFunc = func(port int) []string {
		a, _ := o.argv(s, port) // checked above
		return a[1:]
	}
	if l.Records != nil {
		cfg.SpawnedFunc = func(pid int, exited <-chan struct{}) { l.Records.Track(s.Model, pid, exited) }
	}
	p, err := runner.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Model, err)
	}
	return &serverEngine{Process: p, kind: o.Kind, routes: o.routes()}, nil
}

// serverEngine is one running command engine.
type serverEngine struct {
	*runner.Process
	kind   engine.Kind
	routes []string
}

// Forward relays a durable endpoint/body job's request as it is; a 4xx
// answer rejects the job.
func (e *serverEngine) Forward(ctx context.Context, path string, body []byte) ([]byte, error) {
	if !slices.Contains(e.routes, path) {
		return nil, fmt.Errorf("%w: %s does not serve %s (config.routes)", engine.ErrRejected, e.Name(), path)
	}
	b, err := e.Process.Forward(ctx, path, body)
	return b, rejected(err)
}

// rejected marks a 4xx answer as engine.ErrRejected.
func rejected(err error) error {
	var he *runner.HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 {
		return fmt.Errorf("%w by %s: %w", engine.ErrRejected, Name, err)
	}
	return err
}
