package llamacpp

import (
	"encoding/json"
	"fmt"

	"github.com/vramcram/vramcram/engine"
)

// Params are the generation parameters of an LLM prompt job.
type Params struct {
	MaxTokens   *int     `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
}

// Limits on LLM parameters.
const (
	MaxTokensLimit = 32768
	maxStopWords   = 8
	maxStopLen     = 256
)

// ParseParams decodes and validates raw (a JSON object, or empty). Errors
// are *engine.FieldError naming the field, e.g. "params.temperature".
func ParseParams(raw json.RawMessage) (Params, error) {
	var p Params
	if engine.EmptyParams(raw) {
		return p, nil
	}
	if err := engine.DecodeParams(raw, &p); err != nil {
		return p, err
	}
	switch {
	case p.MaxTokens != nil && (*p.MaxTokens < 1 || *p.MaxTokens > MaxTokensLimit):
		return p, &engine.FieldError{Field: "params.max_tokens", Msg: fmt.Sprintf("must be between 1 and %d", MaxTokensLimit)}
	case p.Temperature != nil && (*p.Temperature < 0 || *p.Temperature > 5):
		return p, &engine.FieldError{Field: "params.temperature", Msg: "must be between 0 and 5"}
	case p.TopP != nil && (*p.TopP <= 0 || *p.TopP > 1):
		return p, &engine.FieldError{Field: "params.top_p", Msg: "must be greater than 0 and at most 1"}
	case len(p.Stop) > maxStopWords:
		return p, &engine.FieldError{Field: "params.stop", Msg: fmt.Sprintf("at most %d stop strings", maxStopWords)}
	}
	for _, s := range p.Stop {
		if s == "" || len(s) > maxStopLen {
			return p, &engine.FieldError{Field: "params.stop", Msg: fmt.Sprintf("each stop string must have 1 to %d bytes", maxStopLen)}
		}
	}
	return p, nil
}
