package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/store"
)

// LlamaLauncher starts llama-server instances through the runner.
type LlamaLauncher struct {
	// Binary is the llama-server path (or a name looked up in PATH).
	Binary string
	// Options holds each model's engine options by model name.
	Options map[string]runner.LlamaOptions
	// Runner is the template for every process: timeouts, heartbeat, logger.
	Runner runner.Config
	// Records, when set, keeps a pid record per engine so that a restart after
	// a crash of VramCram can stop engines left behind.
	Records *runner.Records
}

// Check reports whether m can be started: the binary and the model file exist.
func (l *LlamaLauncher) Check(m Model) error {
	if _, err := exec.LookPath(l.Binary); err != nil {
		return fmt.Errorf("llama-server binary %q not found (inference.llama_server_path)", l.Binary)
	}
	o, ok := l.Options[m.Name]
	if !ok {
		return fmt.Errorf("no engine options for model %q", m.Name)
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

// Launch starts m's llama-server; it returns once the process runs.
func (l *LlamaLauncher) Launch(ctx context.Context, m Model) (Engine, error) {
	o, ok := l.Options[m.Name]
	if !ok {
		return nil, fmt.Errorf("launch %s: no engine options", m.Name)
	}
	cfg := l.Runner
	cfg.Name = m.Name
	cfg.Binary = l.Binary
	cfg.Env = append(append([]string(nil), cfg.Env...), DeviceEnv(m.Placement)...)
	if len(m.Placement) > 1 {
		for _, p := range m.Placement {
			o.TensorSplit = append(o.TensorSplit, p.MB)
		}
	}
	cfg.ArgsFunc = runner.LlamaServerArgs(o)
	if l.Records != nil {
		cfg.SpawnedFunc = func(pid int, exited <-chan struct{}) { l.Records.Track(m.Name, pid, exited) }
	}
	p, err := runner.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", m.Name, err)
	}
	return &llamaEngine{Process: p}, nil
}

// DeviceEnv is the environment that confines an engine to its placement:
// CUDA_VISIBLE_DEVICES with the devices' IDs in order. A placement on the
// unnamed default device sets nothing (the engine sees what VramCram sees).
func DeviceEnv(place []Placement) []string {
	ids := placeIDs(place)
	if strings.Trim(ids, ",") == "" {
		return nil
	}
	return []string{"CUDA_VISIBLE_DEVICES=" + ids}
}

// llamaEngine runs LLM jobs on one llama-server process.
type llamaEngine struct {
	*runner.Process
}

// LLMResult is the stored result of an LLM job.
type LLMResult struct {
	Type            string `json:"type"` // "llm"
	Text            string `json:"text"`
	TokensPredicted int    `json:"tokens_predicted"`
	TokensEvaluated int    `json:"tokens_evaluated"`
	StopType        string `json:"stop_type,omitempty"`
}

// Run sends the job to /completion, streaming tokens into progress.
func (e *llamaEngine) Run(ctx context.Context, job store.Job, progress func(Progress)) ([]byte, error) {
	p, err := ParseLLMParams(job.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	req := runner.CompletionRequest{Prompt: job.Prompt, Temperature: p.Temperature, TopP: p.TopP, Stop: p.Stop, Seed: p.Seed}
	if p.MaxTokens != nil {
		req.MaxTokens = *p.MaxTokens
	}
	n := 0
	res, err := e.Complete(ctx, req, func(chunk string) {
		n++
		progress(Progress{Tokens: n, Chunk: chunk})
	})
	var he *runner.HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 {
		return nil, fmt.Errorf("%w by llama-server: %w", ErrRejected, err)
	}
	if err != nil {
		return nil, err
	}
	// res.Text is the concatenation of the streamed chunks.
	out := LLMResult{Type: "llm", Text: res.Text, TokensPredicted: res.TokensPredicted, TokensEvaluated: res.TokensEvaluated, StopType: res.StopType}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}
