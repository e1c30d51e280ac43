package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// FieldError is invalid input in one named field.
type FieldError struct {
	Field string // e.g. "params.max_tokens"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// EmptyParams reports whether raw holds no params: nothing, or JSON null.
func EmptyParams(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// DecodeParams decodes one JSON object into v, rejecting unknown fields and
// trailing data; errors are *FieldError naming the field under "params.".
func DecodeParams(raw []byte, v any) error {
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
