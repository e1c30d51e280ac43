package api

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Translation of Ollama's request shapes onto llama-server's OpenAI routes.

// ollamaMessage is a message of /api/chat.
type ollamaMessage struct {
	Role      string           `json:"role"`
	Content   string           `json:"content"`
	Thinking  string           `json:"thinking,omitempty"`
	Images    []string         `json:"images,omitempty"` // base64
	ToolCalls []ollamaToolCall `json:"tool_calls,omitempty"`
	ToolName  string           `json:"tool_name,omitempty"`
}

// ollamaToolCall is a tool call as Ollama writes it: arguments an object.
type ollamaToolCall struct {
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// ollamaCommon are the fields /api/chat, /api/generate and /api/embed share.
type ollamaCommon struct {
	Model     string          `json:"model"`
	Options   map[string]any  `json:"options"`
	Stream    *bool           `json:"stream"` // Ollama's default: true
	KeepAlive json.RawMessage `json:"keep_alive"`
	Format    json.RawMessage `json:"format"`
	Think     json.RawMessage `json:"think"`
}

// ollamaOptions maps Ollama's options onto llama-server's sampling fields.
// Options that are not sampling fields (num_ctx, num_gpu, num_thread, …)
// are the engine's start-up settings, set in VramCram's config, and are
// ignored here.
var ollamaOptions = map[string]string{
	"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
	"typical_p": "typical_p", "seed": "seed", "stop": "stop", "repeat_penalty": "repeat_penalty",
	"repeat_last_n": "repeat_last_n", "presence_penalty": "presence_penalty",
	"frequency_penalty": "frequency_penalty", "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
	"mirostat_eta": "mirostat_eta", "num_keep": "n_keep", "num_predict": "max_tokens",
}

// openAIBody starts the engine's body: model, stream, sampling options,
// format and think.
func (r ollamaCommon) openAIBody(model string) map[string]any {
	body := map[string]any{"model": model, "stream": true}
	for k, v := range r.Options {
		f, ok := ollamaOptions[k]
		if !ok {
			continue
		}
		if n, isNum := v.(float64); f == "max_tokens" && (!isNum || n <= 0) {
			continue // -1, -2: no limit
		}
		body[f] = v
	}
	switch firstByte(r.Format) {
	case '"':
		var s string
		if json.Unmarshal(r.Format, &s) == nil && s == "json" {
			body["response_format"] = map[string]any{"type": "json_object"}
		}
	case '{':
		body["response_format"] = map[string]any{"type": "json_schema",
			"json_schema": map[string]any{"name": "format", "schema": r.Format}}
	}
	var think bool
	if json.Unmarshal(r.Think, &think) == nil {
		body["chat_template_kwargs"] = map[string]any{"enable_thinking": think}
	}
	return body
}

// stream is Ollama's stream flag: true unless false.
func (r ollamaCommon) stream() bool { return r.Stream == nil || *r.Stream }

// keepAlive is a parsed keep_alive: set reports whether the request had one.
type keepAlive struct {
	d   time.Duration
	set bool
}

// parseKeepAlive reads Ollama's keep_alive: a number of seconds, or a
// duration string ("5m", "0", "-1s"); negative keeps the model loaded.
func parseKeepAlive(raw json.RawMessage) (keepAlive, error) {
	bad := apiErr(http.StatusBadRequest, CodeInvalid, `keep_alive: must be a number of seconds or a duration such as "5m"`)
	switch firstByte(raw) {
	case 0, 'n':
		return keepAlive{}, nil
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return keepAlive{}, bad
		}
		if d, err := time.ParseDuration(s); err == nil {
			return keepAlive{d: d, set: true}, nil
		}
		raw = json.RawMessage(s) // a number in a string: seconds
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return keepAlive{}, bad
	}
	if secs < 0 {
		return keepAlive{d: -1, set: true}, nil
	}
	return keepAlive{d: time.Duration(min(secs, 1e9) * float64(time.Second)), set: true}, nil
}

// openAIMessages translates Ollama chat messages: images become image
// parts, tool calls get string arguments.
func openAIMessages(msgs []ollamaMessage) []map[string]any {
	out := make([]map[string]any, 0, len(msgs))
	for i, m := range msgs {
		om := map[string]any{"role": m.Role, "content": m.Content}
		if len(m.Images) > 0 {
			parts := []any{map[string]any{"type": "text", "text": m.Content}}
			for _, img := range m.Images {
				parts = append(parts, map[string]any{"type": "image_url",
					"image_url": map[string]any{"url": "data:image/png;base64," + img}})
			}
			om["content"] = parts
		}
		if len(m.ToolCalls) > 0 {
			calls := make([]any, len(m.ToolCalls))
			for k, tc := range m.ToolCalls {
				args := string(tc.Function.Arguments)
				if args == "" {
					args = "{}"
				}
				calls[k] = map[string]any{"id": fmt.Sprintf("call_%d_%d", i, k), "type": "function",
					"function": map[string]any{"name": tc.Function.Name, "arguments": args}}
			}
			om["tool_calls"] = calls
		}
		if m.ToolName != "" {
			om["name"] = m.ToolName
		}
		out = append(out, om)
	}
	return out
}

// checkOllamaMessages requires each message to have a role.
func checkOllamaMessages(msgs []ollamaMessage) error {
	for i, m := range msgs {
		if m.Role == "" {
			return apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("messages[%d].role is required", i))
		}
	}
	return nil
}

// checkOllamaOptions applies the OpenAI door's sampling ranges to the
// options that map onto them.
func checkOllamaOptions(opts map[string]any) error {
	for _, f := range []struct {
		name     string
		min, max float64
	}{{"temperature", 0, 2}, {"top_p", 0, 1}} {
		v, ok := opts[f.name]
		if !ok || v == nil {
			continue
		}
		if n, isNum := v.(float64); !isNum || n < f.min || n > f.max {
			return apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("options.%s: must be a number between %g and %g", f.name, f.min, f.max))
		}
	}
	return nil
}

// ollamaChars counts the characters of a chat's messages (their text; images
// are not characters).
func ollamaChars(msgs []ollamaMessage) int {
	n := 0
	for _, m := range msgs {
		n += utf8.RuneCountInString(m.Content)
	}
	return n
}
