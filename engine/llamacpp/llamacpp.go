// Package llamacpp is the engine for llama.cpp's llama-server: its argv, its
// readiness and output markers, the parameters of its prompt jobs, their
// result shape, and its /completion client. Processes run through runner.
package llamacpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/runner"
)

// Name is the engine's registry name (config: the default of
// models.llm[].config.engine).
const Name = "llama-server"

// portTakenMarker is what llama-server prints when its port is taken.
const portTakenMarker = "couldn't bind HTTP server socket"

// Routes are the OpenAI paths llama-server serves for durable endpoint/body
// jobs; /v1/embeddings only with --embeddings.
var (
	baseRoutes      = []string{"/v1/chat/completions", "/v1/completions"}
	embeddingsRoute = "/v1/embeddings"
)

// Launcher starts llama-server instances through the runner.
type Launcher struct {
	// Binary is the llama-server path (or a name looked up in PATH);
	// Options.Binary overrides it per model.
	Binary string
	// Options holds each model's engine options by model name.
	Options map[string]Options
	// Runner is the template for every process: timeouts, heartbeat, logger.
	Runner runner.Config
	// Records, when set, keeps a pid record per engine so that a restart after
	// a crash of VramCram can stop engines left behind.
	Records *runner.Records
}

// binary is the llama-server of o: its own, else the launcher's, and the
// config key that named it.
func (l *Launcher) binary(o Options) (bin, key string) {
	if o.Binary != "" {
		return o.Binary, "config.binary"
	}
	return l.Binary, "inference.llama_server_path"
}

// Check reports whether s can be started: the binary and the model file exist.
func (l *Launcher) Check(s engine.Spec) error {
	o, ok := l.Options[s.Model]
	if !ok {
		return fmt.Errorf("no engine options for model %q", s.Model)
	}
	if bin, key := l.binary(o); !binaryExists(bin) {
		return fmt.Errorf("llama-server binary %q not found (%s)", bin, key)
	}
	fi, err := os.Stat(o.ModelPath)
	if err != nil {
		return fmt.Errorf("model file %q not found", o.ModelPath)
	}
	if fi.IsDir() {
		return fmt.Errorf("model path %q is a directory", o.ModelPath)
	}
	return nil
}

func binaryExists(bin string) bool {
	_, err := exec.LookPath(bin)
	return err == nil
}

// Routes lists the OpenAI paths model's llama-server serves.
func (l *Launcher) Routes(model string) []string {
	o, ok := l.Options[model]
	if !ok {
		return nil
	}
	r := append([]string(nil), baseRoutes...)
	if o.Embeddings || containsArg(o.Extra, "--embeddings", "--embedding") {
		r = append(r, embeddingsRoute)
	}
	return r
}

func containsArg(args []string, names ...string) bool {
	for _, a := range args {
		for _, n := range names {
			if a == n {
				return true
			}
		}
	}
	return false
}

// Launch starts s's llama-server; it returns once the process runs.
func (l *Launcher) Launch(ctx context.Context, s engine.Spec) (engine.Engine, error) {
	o, ok := l.Options[s.Model]
	if !ok {
		return nil, fmt.Errorf("launch %s: no engine options", s.Model)
	}
	cfg := l.Runner
	cfg.Name = s.Model
	cfg.Binary, _ = l.binary(o)
	cfg.PortTakenMarker = portTakenMarker
	cfg.Env = append(append([]string(nil), cfg.Env...), s.DeviceEnv()...)
	if len(s.SharesMB) > 1 {
		o.TensorSplit = append([]int(nil), s.SharesMB...)
	}
	cfg.ArgsFunc = ServerArgs(o)
	if l.Records != nil {
		cfg.SpawnedFunc = func(pid int, exited <-chan struct{}) { l.Records.Track(s.Model, pid, exited) }
	}
	p, err := runner.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Model, err)
	}
	return &serverEngine{Process: p}, nil
}

// loadFailedMarkers are llama-server's lines for a model that did not load
// (bad path, bad file, not enough memory). Several, because its last lines
// can be lost at exit.
var loadFailedMarkers = []string{
	"exiting due to model loading error",
	"failed to load model",
	"error loading model",
}

// LoadFailed reports whether e's output says the model failed to load. It
// is best effort (see runner.ExitError.Tail); BeforeReady is the dependable
// signal.
func LoadFailed(e *runner.ExitError) bool {
	for _, l := range e.Tail {
		for _, m := range loadFailedMarkers {
			if strings.Contains(l, m) {
				return true
			}
		}
	}
	return false
}

// serverEngine runs LLM jobs on one llama-server process.
type serverEngine struct {
	*runner.Process
}

// Result is the stored result of an LLM prompt job.
type Result struct {
	Type            engine.Kind `json:"type"` // "llm"
	Text            string      `json:"text"`
	TokensPredicted int         `json:"tokens_predicted"`
	TokensEvaluated int         `json:"tokens_evaluated"`
	StopType        string      `json:"stop_type,omitempty"`
	// Usage is the job's tokens in OpenAI's shape; Timings is
	// llama-server's own (prompt_n, predicted_n, predicted_per_second, …).
	Usage   ResultUsage `json:"usage"`
	Timings *Timings    `json:"timings,omitempty"`
}

// ResultUsage is an LLM job's tokens, as OpenAI's usage object names them.
type ResultUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Run sends the job to /completion, streaming tokens into progress.
func (e *serverEngine) Run(ctx context.Context, job engine.Job, progress func(engine.Progress)) ([]byte, error) {
	p, err := ParseParams(job.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", engine.ErrRejected, err)
	}
	req := CompletionRequest{Prompt: job.Prompt, Temperature: p.Temperature, TopP: p.TopP, Stop: p.Stop, Seed: p.Seed}
	if p.MaxTokens != nil {
		req.MaxTokens = *p.MaxTokens
	}
	n := 0
	res, err := Complete(ctx, e.Process, req, func(chunk string) {
		n++
		progress(engine.Progress{Tokens: n, Chunk: chunk})
	})
	if err := rejected(err); err != nil {
		return nil, err
	}
	// res.Text is the concatenation of the streamed chunks.
	out := Result{Type: engine.KindLLM, Text: res.Text, TokensPredicted: res.TokensPredicted, TokensEvaluated: res.TokensEvaluated, StopType: res.StopType,
		Usage: ResultUsage{PromptTokens: res.TokensEvaluated, CompletionTokens: res.TokensPredicted, TotalTokens: res.TokensEvaluated + res.TokensPredicted}}
	if res.Timings != (Timings{}) {
		out.Timings = &res.Timings
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}

// Forward relays a durable endpoint/body job's request as it is.
func (e *serverEngine) Forward(ctx context.Context, path string, body []byte) ([]byte, error) {
	b, err := e.Process.Forward(ctx, path, body)
	if err := rejected(err); err != nil {
		return nil, err
	}
	return b, nil
}

// rejected marks a 4xx answer as engine.ErrRejected: the request is wrong,
// a retry cannot help.
func rejected(err error) error {
	var he *runner.HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 {
		return fmt.Errorf("%w by llama-server: %w", engine.ErrRejected, err)
	}
	return err
}
