package engine

import (
	"bytes"
	"encoding/json"
)

// Usage is what one request or job cost in tokens, as the engine reported
// it, and how fast the engine generated.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	// TokensPerSecond is the engine's own generation speed
	// (llama-server's timings.predicted_per_second); 0 when it gave none.
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
}

// usageDoc is every shape of token figures the engines answer with: the
// OpenAI usage (prompt/completion tokens), the Anthropic and Responses
// usage (input/output tokens) and llama-server's timings.
type usageDoc struct {
	PromptTokens     *int `json:"prompt_tokens"`
	CompletionTokens *int `json:"completion_tokens"`
	InputTokens      *int `json:"input_tokens"`
	OutputTokens     *int `json:"output_tokens"`
}

type timingsDoc struct {
	CacheN             int     `json:"cache_n"`
	PromptN            *int    `json:"prompt_n"`
	PredictedN         *int    `json:"predicted_n"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
}

// FindUsage reads the token figures out of an engine's answer, or out of
// the tail of one (the last events of a stream): the last "usage" object
// and the last "timings" object in b, wherever they are nested. usage wins
// for the token counts (timings' prompt_n leaves out cached tokens);
// timings gives the speed. ok is false when b holds neither.
func FindUsage(b []byte) (u Usage, ok bool) {
	var ud usageDoc
	if decodeLast(b, `"usage"`, &ud) {
		switch {
		case ud.PromptTokens != nil || ud.CompletionTokens != nil:
			u.PromptTokens, u.CompletionTokens, ok = deref(ud.PromptTokens), deref(ud.CompletionTokens), true
		case ud.InputTokens != nil || ud.OutputTokens != nil:
			u.PromptTokens, u.CompletionTokens, ok = deref(ud.InputTokens), deref(ud.OutputTokens), true
		}
	}
	var td timingsDoc
	if decodeLast(b, `"timings"`, &td) && (td.PromptN != nil || td.PredictedN != nil) {
		if !ok {
			u.PromptTokens, u.CompletionTokens = deref(td.PromptN)+td.CacheN, deref(td.PredictedN)
		}
		u.TokensPerSecond, ok = max(td.PredictedPerSecond, 0), true
	}
	return u, ok
}

func deref(p *int) int {
	if p == nil || *p < 0 {
		return 0
	}
	return *p
}

// decodeLast decodes into v the JSON object that follows the last key in b
// (a quoted name not inside a string: not preceded by a backslash, and
// followed by a colon). It reports whether one decoded.
func decodeLast(b []byte, key string, v any) bool {
	k := []byte(key)
	for end := len(b); end > 0; {
		i := bytes.LastIndex(b[:end], k)
		if i < 0 {
			return false
		}
		end = i
		if i > 0 && b[i-1] == '\\' {
			continue // "usage" inside a string
		}
		rest := bytes.TrimLeft(b[i+len(k):], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		if len(rest) == 0 || rest[0] != '{' {
			continue
		}
		if json.NewDecoder(bytes.NewReader(rest)).Decode(v) == nil {
			return true
		}
	}
	return false
}
