package api

import (
	"unicode/utf8"

	"github.com/vramcram/vramcram/engine"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ollamaChat handles POST /api/chat: translated to the engine's
// /v1/chat/completions, answered as Ollama's NDJSON stream or one object.
func (s *Server) ollamaChat(c echo.Context) error {
	var req struct {
		ollamaCommon
		Messages []ollamaMessage `json:"messages"`
		Tools    json.RawMessage `json:"tools"`
	}
	x, err := s.ollamaStart(c, &req, &req.ollamaCommon)
	if err != nil {
		return err
	}
	if err := checkOllamaMessages(req.Messages); err != nil {
		return err
	}
	if err := s.checkChars("messages", ollamaChars(req.Messages)); err != nil {
		return err
	}
	body := req.openAIBody(x.name)
	body["messages"] = openAIMessages(req.Messages)
	if len(req.Tools) > 0 && firstByte(req.Tools) != 'n' {
		body["tools"] = req.Tools // the same shape in both APIs
	}
	x.chat, x.path = true, "/v1/chat/completions"
	return s.ollamaGenerateOn(c, x, body)
}

// ollamaGenerate handles POST /api/generate: a prompt (with an optional
// system text) as one user turn of the engine's chat route, or with "raw"
// as a plain completion; an empty prompt only loads the model (or, with
// keep_alive 0, unloads it).
func (s *Server) ollamaGenerate(c echo.Context) error {
	var req struct {
		ollamaCommon
		Prompt string   `json:"prompt"`
		Suffix string   `json:"suffix"`
		System string   `json:"system"`
		Raw    bool     `json:"raw"`
		Images []string `json:"images"`
	}
	x, err := s.ollamaStart(c, &req, &req.ollamaCommon)
	if err != nil {
		return err
	}
	if req.Suffix != "" {
		return apiErr(http.StatusBadRequest, CodeInvalid, "suffix is not supported through the Ollama API; use POST /infill (llama-server's fill-in-the-middle)")
	}
	if req.Prompt == "" && len(req.Images) == 0 {
		return s.ollamaLoadOnly(c, x)
	}
	if err := s.checkChars("prompt", utf8.RuneCountInString(req.Prompt)+utf8.RuneCountInString(req.System)); err != nil {
		return err
	}
	body := req.openAIBody(x.name)
	x.path = "/v1/chat/completions"
	if req.Raw {
		body["prompt"], x.path = req.Prompt, "/v1/completions"
	} else {
		var msgs []ollamaMessage
		if req.System != "" {
			msgs = append(msgs, ollamaMessage{Role: "system", Content: req.System})
		}
		body["messages"] = openAIMessages(append(msgs, ollamaMessage{Role: "user", Content: req.Prompt, Images: req.Images}))
	}
	return s.ollamaGenerateOn(c, x, body)
}

// ollamaCall is one translated request.
type ollamaCall struct {
	name   string // the model as the client named it (answers echo it)
	model  string // the configured name
	path   string // the engine's route
	chat   bool   // answers carry "message" (else "response")
	stream bool
	keep   keepAlive
	start  time.Time
	raw    []byte // the request's body, as another node gets it (serveRemote)
}

// ollamaStart reads the body into req (whose common fields are cr),
// resolves the model and the keep-alive.
func (s *Server) ollamaStart(c echo.Context, req any, cr *ollamaCommon) (ollamaCall, error) {
	x := ollamaCall{start: s.now()}
	body, err := s.readJSONBody(c, nil)
	if err != nil {
		return x, err
	}
	if err := decodeJSON(body, req, false); err != nil {
		return x, err
	}
	if x.model, err = s.ollamaModel(cr.Model); err != nil {
		return x, err
	}
	if s.cfg.ModelTypes[x.model] != engine.KindLLM {
		return x, apiErr(http.StatusBadRequest, CodeWrongModel, fmt.Sprintf("model '%s' is not a language model", cr.Model))
	}
	if x.keep, err = parseKeepAlive(cr.KeepAlive); err != nil {
		return x, err
	}
	if err := checkOllamaOptions(cr.Options); err != nil {
		return x, err
	}
	x.name, x.stream, x.raw = cr.Model, cr.stream(), body
	return x, nil
}

// withEngine acquires a slot of x.model, posts body to x.path of its engine
// and hands the answer to read, under a context that ends with the client
// or the slot. The slot goes back on every path, with x's keep-alive and
// read's outcome. An engine error status becomes an Ollama error.
func (s *Server) withEngine(c echo.Context, x ollamaCall, body any, read func(resp *http.Response, load time.Duration) error) error {
	ctx := c.Request().Context()
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("engine body: %w", err)
	}
	if err := s.refuseForeignLoad(c); err != nil {
		return err
	}
	sl, err := s.acquire(ctx, x.model)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // the client left while waiting
		}
		return acquireError(x.model, err)
	}
	load := s.now().Sub(x.start)
	outcome := errAbandonedSlot // until the exchange returns: a panic gives the slot back as failed
	defer func() { sl.finish(outcome) }()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	if sl.ctx != nil {
		defer context.AfterFunc(sl.ctx, cancel)()
	}
	outcome = s.engineExchange(c, ectx, sl.url+x.path, b, x.model, func(resp *http.Response) error { return read(resp, load) })
	if outcome != nil && ctx.Err() == nil && sl.ctx != nil && sl.ctx.Err() != nil {
		outcome = fmt.Errorf("engine stopped: %v", context.Cause(sl.ctx))
	}
	if x.keep.set && sl.keepAlive != nil {
		sl.keepAlive(x.keep.d)
	}
	var ae *Error
	if errors.As(outcome, &ae) && !c.Response().Committed {
		return ae
	}
	return nil
}

// engineExchange posts b to url and runs read on a success answer. It
// returns the outcome for the slot: nil, context.Canceled (the client
// left), an *Error to answer, or what went wrong.
func (s *Server) engineExchange(c echo.Context, ctx context.Context, url string, b []byte, model string, read func(*http.Response) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("engine request for %s: %w", model, err)
	}
	req.Header["Content-Type"] = jsonContentType
	resp, err := s.engines.Do(req)
	if err != nil {
		if cerr := c.Request().Context().Err(); cerr != nil {
			return cerr
		}
		s.log.Warn("engine request failed", "model", model, "err", err)
		return &Error{Status: http.StatusBadGateway, Code: CodeEngineFailed,
			Message: fmt.Sprintf("the engine of model %q did not answer; retry", model)}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		eb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return &Error{Status: resp.StatusCode, Code: CodeEngineFailed, Message: engineErrorMessage(eb)}
	}
	return read(resp)
}

// engineErrorMessage is the message of a llama-server error body.
func engineErrorMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return strings.TrimSpace(string(b))
}

// ollamaLoadOnly answers /api/generate without a prompt: the model is
// loaded (a slot is taken and given back), or unloaded with keep_alive 0.
func (s *Server) ollamaLoadOnly(c echo.Context, x ollamaCall) error {
	if err := s.refuseForeignLoad(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	sl, err := s.acquire(ctx, x.model)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil
		}
		return acquireError(x.model, err)
	}
	reason := "load"
	if x.keep.set && sl.keepAlive != nil {
		sl.keepAlive(x.keep.d)
		if x.keep.d == 0 {
			reason = "unload"
		}
	}
	sl.finish(nil)
	return c.JSON(http.StatusOK, map[string]any{"model": x.name, "created_at": s.now().UTC(), "response": "",
		"done": true, "done_reason": reason})
}

// ollamaGenerateOn runs a chat or generate call on the engine.
func (s *Server) ollamaGenerateOn(c echo.Context, x ollamaCall, body map[string]any) error {
	if s.serveRemote(c, x.model, x.raw) {
		return nil
	}
	return s.withEngine(c, x, body, func(resp *http.Response, load time.Duration) error {
		t := &ollamaTranscript{s: s, c: c, x: x, load: load}
		return t.relay(resp.Body)
	})
}
