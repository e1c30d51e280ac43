package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// kind is the API shape of a generation request.
type kind int

const (
	kindNative     kind = iota // /completion
	kindCompletion             // /v1/completions
	kindChat                   // /v1/chat/completions
	kindAnthropic              // /v1/messages (routes_doors.go)
	kindResponses              // /v1/responses (routes_doors.go)
	kindInfill                 // /infill: answered like /completion
)

// genRequest is a parsed generation request.
type genRequest struct {
	kind         kind
	prompt       string
	nPredict     int
	stream       bool
	stops        []string
	includeUsage bool
	settings     map[string]any  // sampling parameters, echoed back
	tools        json.RawMessage // chat: the "tools" field as received
}

// requestBody is the union of the three request shapes.
type requestBody struct {
	Prompt   json.RawMessage `json:"prompt"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	NPredict            *int            `json:"n_predict"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	Stop                json.RawMessage `json:"stop"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature *float64 `json:"temperature"`
	TopP        *float64 `json:"top_p"`
	Seed        *int64   `json:"seed"`

	Tools json.RawMessage `json:"tools"`
	doorFields
}

// errParse marks a body that is not JSON.
var errParse = errors.New("[json.exception.parse_error] parse error")

func parseGenRequest(k kind, r *http.Request) (genRequest, error) {
	var b requestBody
	err := json.NewDecoder(r.Body).Decode(&b)
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		// Valid JSON with a field of the wrong type: llama-server's request
		// parsing throws invalid_argument, answered 400 invalid_request_error.
		return genRequest{}, fmt.Errorf("Field '%s': [json.exception.type_error.302] type must be %s, but is %s",
			te.Field, jsonTypeName(te.Type.Kind().String()), te.Value)
	case err != nil:
		return genRequest{}, fmt.Errorf("%w: %v", errParse, err)
	}
	g := genRequest{kind: k, stream: b.Stream, nPredict: -1, settings: map[string]any{}}
	if b.StreamOptions != nil {
		g.includeUsage = b.StreamOptions.IncludeUsage
	}
	for _, n := range []*int{b.MaxCompletionTokens, b.MaxTokens, b.NPredict, b.MaxOutputTokens} {
		if n != nil {
			g.nPredict = *n
		}
	}
	g.settings["n_predict"] = g.nPredict
	if b.Temperature != nil {
		g.settings["temperature"] = *b.Temperature
	}
	if b.TopP != nil {
		g.settings["top_p"] = *b.TopP
	}
	if b.Seed != nil {
		g.settings["seed"] = *b.Seed
	}
	stops, ok := stringOrList(b.Stop)
	if !ok {
		return g, fmt.Errorf("\"stop\" must be a string or an array of strings")
	}
	stops = append(stops, b.StopSequences...)
	for _, s := range stops {
		if s != "" {
			g.stops = append(g.stops, s)
		}
	}
	switch k {
	case kindAnthropic, kindResponses, kindInfill:
		g.prompt, err = doorPrompt(k, b)
		return g, err
	}
	if k == kindChat {
		g.tools = b.Tools
		if len(b.Messages) == 0 {
			return g, fmt.Errorf("'messages' is required")
		}
		parts := make([]string, 0, len(b.Messages))
		for _, m := range b.Messages {
			parts = append(parts, messageText(m.Content))
		}
		g.prompt = strings.Join(parts, "\n")
		return g, nil
	}
	prompts, ok := stringOrList(b.Prompt)
	if !ok || b.Prompt == nil {
		return g, fmt.Errorf("\"prompt\" must be a string or an array of strings")
	}
	g.prompt = strings.Join(prompts, " ")
	return g, nil
}

// jsonTypeName names a Go kind as nlohmann::json names a JSON type.
func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}

// messageText reads a chat message content: a string or an array of
// {"type":"text","text":…} parts.
func messageText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// pieces returns the streamed pieces for prompt under the generation rule
// (see the package doc) and the stop type if no stop string intervenes.
func pieces(prompt string, nPredict int) ([]string, string) {
	tokens := strings.Fields("echo: " + prompt)
	stopType := "eos"
	if nPredict > 0 && nPredict < len(tokens) {
		tokens, stopType = tokens[:nPredict], "limit"
	}
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i > 0 {
			t = " " + t
		}
		out[i] = t
	}
	return out, stopType
}

// textStream applies stop strings to generated text the way llama-server
// does: text is released only once it cannot be the start of a stop string,
// and generation ends before the first stop string.
type textStream struct {
	stops []string
	text  string // generated so far
	sent  int    // bytes of text released
	word  string // the stop string that ended it
}

// add appends a piece and returns the text now safe to release, and whether
// a stop string ended the generation.
func (t *textStream) add(piece string) (string, bool) {
	t.text += piece
	if idx, word := firstStop(t.text, t.stops); idx >= 0 {
		t.text, t.word = t.text[:idx], word
		return t.release(len(t.text)), true
	}
	return t.release(len(t.text) - partialStop(t.text, t.stops)), false
}

// flush releases what was held back, at the natural end.
func (t *textStream) flush() string { return t.release(len(t.text)) }

func (t *textStream) release(upTo int) string {
	if upTo <= t.sent {
		return ""
	}
	out := t.text[t.sent:upTo]
	t.sent = upTo
	return out
}

// firstStop finds the earliest stop string in text.
func firstStop(text string, stops []string) (int, string) {
	idx, word := -1, ""
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (idx < 0 || i < idx) {
			idx, word = i, s
		}
	}
	return idx, word
}

// partialStop is the length of the longest suffix of text that is a proper
// prefix of a stop string.
func partialStop(text string, stops []string) int {
	best := 0
	for _, s := range stops {
		for l := min(len(s)-1, len(text)); l > best; l-- {
			if strings.HasSuffix(text, s[:l]) {
				best = l
				break
			}
		}
	}
	return best
}

// genResult is a finished generation.
type genResult struct {
	content      string
	predicted    int
	evaluated    int
	stopType     string
	stoppingWord string
	promptMS     float64
	predictedMS  float64
}

// outcome is how a generation ended.
type outcome int

const (
	genDone      outcome = iota // answered in full
	genAbandoned                // client gone or engine terminating: no answer
	genFailed                   // --test-stream-error-after: an error instead of the rest
)

// midStreamError is the error of --test-stream-error-after, as llama-server
// reports a generation that failed after it began (with random-weight
// models, a chat output its parser refuses).
const midStreamError = "The model produced output that does not match the expected Generic format"

// generate produces the answer piece by piece, calling emit with each
// releasable piece.
func (s *server) generate(ctx context.Context, req genRequest, reqN int64, emit func(string) error) (genResult, outcome) {
	start := time.Now()
	ps, stopType := pieces(req.prompt, req.nPredict)
	res := genResult{evaluated: len(strings.Fields(req.prompt)), stopType: stopType}
	res.promptMS = float64(res.evaluated) * 0.1
	s.promptTokens.Add(int64(res.evaluated))
	crashAt := -1
	if s.o.crashAfter > 0 && reqN == int64(s.o.crashAfter) {
		crashAt = len(ps) / 2 // mid-stream: after half the tokens went out
		if crashAt == 0 && len(ps) > 1 {
			crashAt = 1
		}
	}
	ts := textStream{stops: req.stops}
	for i, p := range ps {
		if i == crashAt {
			crash(reqN)
		}
		if n := s.o.streamErrorAfter; n > 0 && i == n {
			logf("srv    send_error: task id = %d, error: %s", reqN, midStreamError)
			return res, genFailed
		}
		if s.terminating.Load() {
			<-ctx.Done() // like llama-server after SIGTERM: no answer, ever
			return res, genAbandoned
		}
		if d := s.o.tokenDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if ctx.Err() != nil {
			logf("srv  stop: cancel task, client disconnected (after %d tokens)", i)
			return res, genAbandoned
		}
		res.predicted++
		s.predictedTokens.Add(1)
		out, stopped := ts.add(p)
		if out != "" {
			if err := emit(out); err != nil {
				return res, genAbandoned
			}
		}
		if stopped {
			res.stopType, res.stoppingWord = "word", ts.word
			break
		}
	}
	if crashAt >= 0 {
		crash(reqN) // a stop string ended it before the crash point
	}
	if out := ts.flush(); out != "" {
		if err := emit(out); err != nil {
			return res, genAbandoned
		}
	}
	res.content = ts.text
	res.predictedMS = float64(time.Since(start).Microseconds()) / 1000
	return res, genDone
}

// generation serves the three generation endpoints.
func (s *server) generation(k kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := parseGenRequest(k, r)
		switch {
		case errors.Is(err, errParse):
			// llama-server answers a JSON parse error with 500 server_error.
			writeError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
			return
		}
		n := s.gens.Add(1)
		s.inflight.Add(1)
		defer s.inflight.Done()
		ctx := r.Context()
		slot, ok := s.acquireSlot(ctx)
		if !ok {
			return
		}
		defer func() { s.slots <- slot }()
		// Refused before any header goes out, so streams get the 400 too.
		if !s.checkContext(w, req.prompt) {
			return
		}
		s.processing.Add(1)
		defer s.processing.Add(-1)

		out := newResponder(w, req, s.model, slot)
		res, how := s.generate(ctx, req, n, out.piece)
		switch how {
		case genAbandoned:
			return
		case genFailed:
			out.fail(http.StatusInternalServerError, "server_error", midStreamError)
			return
		}
		out.final(res)
		if s.o.hangAfter > 0 && n >= int64(s.o.hangAfter) && !s.hung.Swap(true) {
			logf("test: hanging after generation request %d (--test-hang-after)", n)
		}
	}
}

// responder writes one request's answer in its API shape, streamed (SSE)
// or in one piece.
type responder struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	req     genRequest
	model   string
	slot    int
	id      string
	created int64
	sent    int // pieces streamed
}

const fingerprint = "b0-testengine"

func newResponder(w http.ResponseWriter, req genRequest, model string, slot int) *responder {
	rp := &responder{
		w: w, rc: http.NewResponseController(w), req: req, model: model, slot: slot,
		id: fmt.Sprintf("chatcmpl-test%d", time.Now().UnixNano()), created: time.Now().Unix(),
	}
	switch req.kind {
	case kindCompletion:
		rp.id = fmt.Sprintf("cmpl-test%d", time.Now().UnixNano())
	case kindAnthropic:
		rp.id = fmt.Sprintf("msg_test%d", time.Now().UnixNano())
	case kindResponses:
		rp.id = fmt.Sprintf("resp_test%d", time.Now().UnixNano())
	}
	if req.stream {
		// Headers go out once a slot took the request, as in llama-server.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_ = rp.rc.Flush()
	}
	return rp
}

func (rp *responder) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(rp.w, "data: %s\n\n", b); err != nil {
		return err
	}
	return rp.rc.Flush()
}

// piece streams one piece of text (non-stream answers collect it instead).
func (rp *responder) piece(text string) error {
	if !rp.req.stream || (rp.req.kind == kindChat && toolCall(rp.req.tools) != nil) {
		return nil // a tool call answers instead of text
	}
	rp.sent++
	switch rp.req.kind {
	case kindAnthropic:
		return rp.anthropicPiece(text)
	case kindResponses:
		return rp.responsesPiece(text)
	case kindNative, kindInfill:
		return rp.event(map[string]any{
			"index": 0, "content": text, "tokens": []int{}, "stop": false, "id_slot": -1, // as llama-server streams it
			"tokens_predicted": rp.sent, "tokens_evaluated": len(strings.Fields(rp.req.prompt)),
		})
	case kindCompletion:
		return rp.event(rp.oai("text_completion", map[string]any{
			"text": text, "index": 0, "logprobs": nil, "finish_reason": nil,
		}))
	default:
		if rp.sent == 1 {
			err := rp.event(rp.oai("chat.completion.chunk", map[string]any{
				"finish_reason": nil, "index": 0, "delta": map[string]any{"role": "assistant", "content": nil},
			}))
			if err != nil {
				return err
			}
		}
		return rp.event(rp.oai("chat.completion.chunk", map[string]any{
			"finish_reason": nil, "index": 0, "delta": map[string]any{"content": text},
		}))
	}
}

// oai builds an OpenAI-shaped object with one choice.
func (rp *responder) oai(object string, choice map[string]any) map[string]any {
	return map[string]any{
		"choices": []any{choice}, "created": rp.created, "id": rp.id, "model": rp.model,
		"system_fingerprint": fingerprint, "object": object,
	}
}

func (rp *responder) final(res genResult) {
	timings := map[string]any{
		"cache_n": 0, "prompt_n": res.evaluated, "prompt_ms": res.promptMS,
		"prompt_per_token_ms": 0.1, "prompt_per_second": 10000.0,
		"predicted_n": res.predicted, "predicted_ms": res.predictedMS,
		"predicted_per_token_ms": perToken(res.predictedMS, res.predicted),
		"predicted_per_second":   perSecond(res.predictedMS, res.predicted),
	}
	usage := map[string]any{
		"completion_tokens": res.predicted, "prompt_tokens": res.evaluated,
		"total_tokens": res.predicted + res.evaluated, "prompt_tokens_details": map[string]any{"cached_tokens": 0},
	}
	finish := "length"
	if res.stopType == "eos" || res.stopType == "word" {
		finish = "stop"
	}
	content := res.content
	if rp.req.stream {
		content = "" // streamed already, as llama-server does
	}
	switch rp.req.kind {
	case kindAnthropic:
		rp.anthropicFinal(res)
	case kindResponses:
		rp.responsesFinal(res)
	case kindNative, kindInfill:
		v := map[string]any{
			"index": 0, "content": content, "tokens": []int{}, "id_slot": rp.slot, "stop": true,
			"model": rp.model, "tokens_predicted": res.predicted, "tokens_evaluated": res.evaluated,
			"generation_settings": rp.req.settings, "prompt": rp.req.prompt, "has_new_line": false,
			"truncated": false, "stop_type": res.stopType, "stopping_word": res.stoppingWord,
			"tokens_cached": res.evaluated + res.predicted, "timings": timings,
		}
		if rp.req.stream {
			_ = rp.event(v)
			return
		}
		writeJSON(rp.w, http.StatusOK, v)
	case kindCompletion:
		v := rp.oai("text_completion", map[string]any{
			"text": content, "index": 0, "logprobs": nil, "finish_reason": finish,
		})
		v["usage"], v["timings"] = usage, timings
		if rp.req.stream {
			_ = rp.event(v)
			_, _ = fmt.Fprint(rp.w, "data: [DONE]\n\n")
			_ = rp.rc.Flush()
			return
		}
		writeJSON(rp.w, http.StatusOK, v)
	default:
		if rp.req.stream {
			if call := toolCall(rp.req.tools); call != nil {
				call["index"] = 0
				_ = rp.event(rp.oai("chat.completion.chunk", map[string]any{"finish_reason": nil, "index": 0,
					"delta": map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{call}}}))
				finish = "tool_calls"
			}
			v := rp.oai("chat.completion.chunk", map[string]any{
				"finish_reason": finish, "index": 0, "delta": map[string]any{},
			})
			if rp.req.includeUsage {
				_ = rp.event(v)
				v = rp.oai("chat.completion.chunk", nil)
				v["choices"], v["usage"] = []any{}, usage
			}
			v["timings"] = timings
			_ = rp.event(v)
			_, _ = fmt.Fprint(rp.w, "data: [DONE]\n\n")
			_ = rp.rc.Flush()
			return
		}
		v := rp.oai("chat.completion", map[string]any{
			"finish_reason": finish, "index": 0,
			"message": map[string]any{"role": "assistant", "content": content},
		})
		if call := toolCall(rp.req.tools); call != nil {
			v["choices"] = []any{map[string]any{"finish_reason": "tool_calls", "index": 0,
				"message": map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{call}}}}
		}
		v["usage"], v["timings"] = usage, timings
		writeJSON(rp.w, http.StatusOK, v)
	}
}

// fail ends the answer with an error: an error event ending a stream (no
// final event, no [DONE]; Anthropic's shape is an "error" event), or the
// error answer of a request that was not streamed.
func (rp *responder) fail(status int, typ, msg string) {
	e := map[string]any{"code": status, "message": msg, "type": typ}
	if !rp.req.stream {
		writeError(rp.w, status, typ, msg)
		return
	}
	if rp.req.kind == kindAnthropic {
		b, _ := json.Marshal(e)
		_, _ = fmt.Fprintf(rp.w, "event: error\ndata: %s\n\n", b)
	} else {
		b, _ := json.Marshal(map[string]any{"error": e})
		_, _ = fmt.Fprintf(rp.w, "data: %s\n\n", b)
	}
	_ = rp.rc.Flush()
}

func perToken(ms float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return ms / float64(n)
}

func perSecond(ms float64, n int) float64 {
	if ms == 0 {
		return 0
	}
	return float64(n) / ms * 1000
}
