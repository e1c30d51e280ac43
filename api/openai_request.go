package api

import (
	"github.com/vramcram/vramcram/engine"

	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"unicode/utf8"
)

// openAIKind is one of the proxied OpenAI routes.
type openAIKind int

const (
	kindChat openAIKind = iota
	kindCompletion
	kindEmbedding
)

// enginePath is the engine route a request of kind k is forwarded to.
func (k openAIKind) enginePath() string {
	switch k {
	case kindCompletion:
		return "/v1/completions"
	case kindEmbedding:
		return "/v1/embeddings"
	}
	return "/v1/chat/completions"
}

// openAIRequest holds the fields VramCram checks. Every other field is the
// engine's business: the body is forwarded as it came.
type openAIRequest struct {
	Model               string          `json:"model"`
	Messages            []openAIMessage `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	Input               json.RawMessage `json:"input"`
	Stream              *bool           `json:"stream"` // checked for its type only
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	N                   *int64          `json:"n"`
}

type openAIMessage struct {
	Role    *string         `json:"role"`
	Content json.RawMessage `json:"content"`
}

// parseOpenAI decodes body, checks it for kind k and returns the model and
// whether the client asked for a stream. Whether the answer streams is
// still the engine's to say (by its Content-Type).
func (s *Server) parseOpenAI(k openAIKind, body []byte) (string, bool, error) {
	model, req, err := s.parseOpenAIRequest(k, body)
	return model, err == nil && k != kindEmbedding && req.Stream != nil && *req.Stream, err
}

func (s *Server) parseOpenAIRequest(k openAIKind, body []byte) (string, openAIRequest, error) {
	var req openAIRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return "", req, err
	}
	model, err := s.checkModel(k, req.Model)
	if err != nil {
		return "", req, err
	}
	switch k {
	case kindChat:
		err = checkMessages(req.Messages)
	case kindCompletion:
		err = checkTexts("prompt", req.Prompt)
	case kindEmbedding:
		err = checkTexts("input", req.Input)
	}
	if err != nil {
		return "", req, err
	}
	if err := checkSampling(req); err != nil {
		return "", req, err
	}
	if err := s.checkPromptChars(k, req); err != nil {
		return "", req, err
	}
	return model, req, nil
}

// checkPromptChars applies server.max_prompt_chars, as POST /jobs does, to
// the text of a request: the messages' text content (strings and text
// parts), or the prompt or input strings. Token-ID arrays and image parts
// are not characters; the body limit bounds them.
func (s *Server) checkPromptChars(k openAIKind, req openAIRequest) error {
	field, n := "messages", 0
	switch k {
	case kindChat:
		for _, m := range req.Messages {
			n += contentChars(m.Content)
		}
	case kindCompletion:
		field, n = "prompt", textChars(req.Prompt)
	case kindEmbedding:
		field, n = "input", textChars(req.Input)
	}
	return s.checkChars(field, n)
}

// checkChars applies server.max_prompt_chars to n characters of field, for
// every door.
func (s *Server) checkChars(field string, n int) error {
	if n > s.cfg.MaxPromptChars {
		return fieldErr(field, fmt.Sprintf("%d characters exceeds the limit of %d (server.max_prompt_chars)", n, s.cfg.MaxPromptChars))
	}
	return nil
}

// contentChars counts the characters of a message content: a string, or
// the "text" of each part of an array.
func contentChars(raw json.RawMessage) int {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return utf8.RuneCountInString(str)
	}
	var parts []struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts) // a part of another shape counts nothing; the others still count
	n := 0
	for _, p := range parts {
		n += utf8.RuneCountInString(p.Text)
	}
	return n
}

// textChars counts the characters of a prompt or input: a string, or the
// strings of an array (token-ID arrays count nothing).
func textChars(raw json.RawMessage) int {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return utf8.RuneCountInString(str)
	}
	var items []json.RawMessage
	n := 0
	if json.Unmarshal(raw, &items) == nil {
		for _, it := range items {
			if json.Unmarshal(it, &str) == nil {
				n += utf8.RuneCountInString(str)
			}
		}
	}
	return n
}

// checkModel requires a configured LLM (by name or alias), with embeddings
// for /v1/embeddings, and returns its name.
func (s *Server) checkModel(k openAIKind, name string) (string, error) {
	if name == "" {
		return "", fieldErr("model", "required: the name of a configured model (GET /v1/models lists them)")
	}
	model, ok := s.resolveModel(name)
	if !ok {
		e := s.unknownModel(name)
		e.Param = "model"
		return "", e
	}
	if typ := s.cfg.ModelTypes[model]; typ != engine.KindLLM {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeWrongModel, Param: "model",
			Message: fmt.Sprintf("model: %q is a %s model; this route serves LLMs (images: POST /v1/images/generations)", model, typ)}
	}
	if k == kindEmbedding && !s.cfg.Embeddings[model] {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeWrongModel, Param: "model",
			Message: fmt.Sprintf("model: %q does not serve embeddings (set models.llm[].config.embeddings: true)", model)}
	}
	return model, nil
}

// checkMessages requires a non-empty list of messages, each with a role
// and a content that is a string, an array of parts, or null.
func checkMessages(msgs []openAIMessage) error {
	if len(msgs) == 0 {
		return fieldErr("messages", "required: a non-empty array of {role, content} objects")
	}
	for i, m := range msgs {
		if m.Role == nil || *m.Role == "" {
			return fieldErr(fmt.Sprintf("messages[%d].role", i), "required: a non-empty string")
		}
		switch firstByte(m.Content) {
		case '"', '[', 'n', 0: // string, parts, null or absent (assistant tool calls)
		default:
			return fieldErr(fmt.Sprintf("messages[%d].content", i), "must be a string, an array of content parts, or null")
		}
	}
	return nil
}

// checkTexts requires raw to be a string or a non-empty array (of strings,
// or of token IDs, or of arrays of token IDs).
func checkTexts(field string, raw json.RawMessage) error {
	switch firstByte(raw) {
	case '"':
		return nil
	case '[':
		if bytes.Equal(bytes.Join(bytes.Fields(raw), nil), []byte("[]")) {
			return fieldErr(field, "must not be an empty array")
		}
		return nil
	case 0, 'n':
		return fieldErr(field, "required: a string or an array of strings")
	}
	return fieldErr(field, "must be a string or an array of strings")
}

// checkSampling checks the ranges of the common sampling fields.
func checkSampling(req openAIRequest) error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if f.v != nil && *f.v < 1 {
			return fieldErr(f.name, "must be at least 1")
		}
	}
	switch {
	case req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 2):
		return fieldErr("temperature", "must be between 0 and 2")
	case req.TopP != nil && (*req.TopP < 0 || *req.TopP > 1):
		return fieldErr("top_p", "must be between 0 and 1")
	case req.N != nil && *req.N != 1:
		return fieldErr("n", "only 1 is supported")
	}
	return nil
}

// firstByte is the first non-space byte of raw, or 0 if there is none.
func firstByte(raw []byte) byte {
	for _, b := range raw {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b
	}
	return 0
}
