package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// FieldError is invalid input in one named field.
type FieldError struct {
	Field string // e.g. "params.max_tokens"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// LLMParams are the generation parameters of an LLM job.
type LLMParams struct {
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

// ParseLLMParams decodes and validates raw (a JSON object, or empty). Errors
// are *FieldError naming the field, e.g. "params.temperature".
func ParseLLMParams(raw json.RawMessage) (LLMParams, error) {
	var p LLMParams
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return p, nil
	}
	if err := decodeStrict(raw, &p); err != nil {
		return p, err
	}
	switch {
	case p.MaxTokens != nil && (*p.MaxTokens < 1 || *p.MaxTokens > MaxTokensLimit):
		return p, &FieldError{"params.max_tokens", fmt.Sprintf("must be between 1 and %d", MaxTokensLimit)}
	case p.Temperature != nil && (*p.Temperature < 0 || *p.Temperature > 5):
		return p, &FieldError{"params.temperature", "must be between 0 and 5"}
	case p.TopP != nil && (*p.TopP <= 0 || *p.TopP > 1):
		return p, &FieldError{"params.top_p", "must be greater than 0 and at most 1"}
	case len(p.Stop) > maxStopWords:
		return p, &FieldError{"params.stop", fmt.Sprintf("at most %d stop strings", maxStopWords)}
	}
	for _, s := range p.Stop {
		if s == "" || len(s) > maxStopLen {
			return p, &FieldError{"params.stop", fmt.Sprintf("each stop string must have 1 to %d bytes", maxStopLen)}
		}
	}
	return p, nil
}

// decodeStrict decodes one JSON object into v, rejecting unknown fields and
// naming the field of any error under "params.".
func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return paramsError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{"params", "must be a single JSON object"}
	}
	return nil
}

func paramsError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return &FieldError{"params", "must be a JSON object"}
		}
		return &FieldError{"params." + te.Field, "must be " + jsonKind(te.Type.Kind().String())}
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		name := strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
		return &FieldError{"params." + name, "unknown field"}
	}
	return &FieldError{"params", "invalid JSON: " + err.Error()}
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "ptr":
		return "a number"
	}
	return "of a different type"
}
