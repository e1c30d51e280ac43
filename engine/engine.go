package engine

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
)

// Kind is what a model produces, and so which list of the configuration holds
// it and which result shape its jobs have.
type Kind string

// Kinds of model.
const (
	KindLLM       Kind = "llm"       // text: models.llm[]
	KindDiffusion Kind = "diffusion" // images: models.diffusion[]
)

// Kinds lists every Kind.
func Kinds() []Kind { return []Kind{KindLLM, KindDiffusion} }

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool { return k == KindLLM || k == KindDiffusion }

// ErrRejected marks a job error that retrying cannot fix (invalid params, an
// engine's 4xx answer such as a prompt longer than the context). An Engine's
// Run wraps it; the job then fails at once.
var ErrRejected = errors.New("job rejected")

// Job is one durable job as an engine sees it: either a prompt with params
// (the engine's own parameters), or an OpenAI request (Endpoint and Body)
// relayed as is.
type Job struct {
	ID     string
	Model  string
	Prompt string
	Params json.RawMessage
	// Endpoint is the OpenAI path of a relayed request, e.g.
	// "/v1/chat/completions"; empty for a prompt job.
	Endpoint string
	// Body is the request body of a relayed request (a JSON object).
	Body json.RawMessage
}

// Progress is a running job's progress.
type Progress struct {
	Tokens int    `json:"tokens,omitempty"` // LLM: chunks generated so far
	Step   int    `json:"step,omitempty"`   // diffusion: sampling step done
	Steps  int    `json:"steps,omitempty"`  // diffusion: steps in total
	Chunk  string `json:"-"`                // LLM: the text of this chunk
}

// Spec is one instance of a model to check or start.
type Spec struct {
	Model  string // the model's name
	Engine string // the registry name of its engine, e.g. "llama-server"
	Kind   Kind
	// Devices are the IDs of the GPUs the instance may use, in order (what
	// CUDA_VISIBLE_DEVICES gets). Empty, or only empty IDs: unconfined.
	Devices []string
	// SharesMB, for an instance split over several devices, is each
	// device's share of its memory, in Devices' order.
	SharesMB []int
}

// GPUs is the value of CUDA_VISIBLE_DEVICES for s: the device IDs joined by
// commas; "" when the instance is not confined.
func (s Spec) GPUs() string {
	ids := strings.Join(s.Devices, ",")
	if strings.Trim(ids, ",") == "" {
		return ""
	}
	return ids
}

// DeviceEnv is the environment that confines an engine to its devices:
// CUDA_VISIBLE_DEVICES with the IDs in order. An unconfined instance gets
// nothing (the engine sees what VramCram sees).
func (s Spec) DeviceEnv() []string {
	if g := s.GPUs(); g != "" {
		return []string{"CUDA_VISIBLE_DEVICES=" + g}
	}
	return nil
}

// Engine is one running model server, or for a one-shot engine a handle that
// runs one process per job.
type Engine interface {
	// WaitReady blocks until the engine serves, it exits, or ctx ends.
	WaitReady(ctx context.Context) error
	// Done is closed once the process has exited and been reaped.
	Done() <-chan struct{}
	// Err says why the process ended; valid after Done.
	Err() error
	// Stop terminates the engine: SIGTERM, grace, SIGKILL. Idempotent.
	Stop(ctx context.Context) error
	// PID is the engine's process id (0 if none).
	PID() int
	// Run executes one prompt job and returns the result document to store.
	// Errors wrapping ErrRejected fail the job without a retry.
	Run(ctx context.Context, job Job, progress func(Progress)) ([]byte, error)
}

// Launcher starts engines for models.
type Launcher interface {
	// Check reports why a model cannot be started (binary or file missing), or nil.
	Check(s Spec) error
	// Launch spawns the model's engine; it returns once the process runs.
	Launch(ctx context.Context, s Spec) (Engine, error)
}

// OneShot is an Engine that runs one process per job: its failures are the
// job's process, not the engine's, so there is no engine exit to wait for
// before recording them.
type OneShot interface {
	Engine
	OneShot()
}

// LastPIDer is an Engine whose process changes over its life (a one-shot
// engine): LastPID is its latest process, running or not, whose memory the
// next load waits for after an eviction.
type LastPIDer interface {
	LastPID() int
}

// URLer is an Engine that serves HTTP: URL is its base URL,
// http://127.0.0.1:PORT. Interactive requests are relayed there.
type URLer interface {
	URL() string
}

// Forwarder is an Engine that takes OpenAI requests as they are: Forward
// POSTs body to path and returns the engine's JSON answer. An answer of 4xx
// is an error wrapping ErrRejected. Durable endpoint/body jobs run through it.
type Forwarder interface {
	Forward(ctx context.Context, path string, body []byte) ([]byte, error)
}

// OutputFollower is an Engine whose process output can be followed (GET
// /logs/stream/{model}): FollowOutput returns the recent lines, oldest
// first, and a channel of the lines that follow (a slow reader loses lines);
// stop ends the following. The channel stays open after the process exits:
// watch Done.
type OutputFollower interface {
	FollowOutput(buf int) (recent []string, lines <-chan string, stop func())
}

// RouteLister is a Launcher that says which OpenAI paths each of its models
// serves ("/v1/chat/completions", …): the paths an endpoint/body job may
// name.
type RouteLister interface {
	Routes(model string) []string
}
