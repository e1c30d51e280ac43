package command

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/llamacpp"
)

const completionsRoute = "/v1/completions"

// completionsBody is the OpenAI request a prompt job becomes.
type completionsBody struct {
	Model       string   `json:"model"`
	Prompt      string   `json:"prompt"`
	MaxTokens   *int     `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
}

// completionsAnswer is the part of the answer a prompt job's result takes.
type completionsAnswer struct {
	Choices []struct {
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Timings *llamacpp.Timings `json:"timings"` // a llama-server behind the command engine
}

// Run runs an LLM prompt job on the server's /v1/completions (the same
// params and result shape as llama-server's prompt jobs). Other prompt jobs
// are rejected: a command engine takes endpoint/body jobs.
func (e *serverEngine) Run(ctx context.Context, job engine.Job, progress func(engine.Progress)) ([]byte, error) {
	if e.kind != engine.KindLLM || !slices.Contains(e.routes, completionsRoute) {
		return nil, fmt.Errorf("%w: %s takes endpoint/body jobs only (its engine is %s)", engine.ErrRejected, job.Model, Name)
	}
	p, err := llamacpp.ParseParams(job.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", engine.ErrRejected, err)
	}
	body, err := json.Marshal(completionsBody{Model: job.Model, Prompt: job.Prompt, MaxTokens: p.MaxTokens,
		Temperature: p.Temperature, TopP: p.TopP, Stop: p.Stop, Seed: p.Seed})
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	raw, err := e.Forward(ctx, completionsRoute, body)
	if err != nil {
		return nil, err
	}
	var a completionsAnswer
	if err := json.Unmarshal(raw, &a); err != nil || len(a.Choices) == 0 {
		return nil, fmt.Errorf("%s answered no completion: %.200s", job.Model, raw)
	}
	res := llamacpp.Result{Type: engine.KindLLM, Text: a.Choices[0].Text, TokensPredicted: a.Usage.CompletionTokens,
		TokensEvaluated: a.Usage.PromptTokens, StopType: a.Choices[0].FinishReason, Timings: a.Timings,
		Usage: llamacpp.ResultUsage{PromptTokens: a.Usage.PromptTokens, CompletionTokens: a.Usage.CompletionTokens,
			TotalTokens: a.Usage.PromptTokens + a.Usage.CompletionTokens}}
	progress(engine.Progress{Tokens: res.TokensPredicted, Chunk: res.Text})
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}
