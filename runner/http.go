package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HTTPError is a non-200 answer from the engine, e.g. 503 "Loading model"
// or 400 exceed_context_size_error. Type and Message come from llama-server's
// {"error":{"code","message","type"}} body when it has one.
type HTTPError struct {
	StatusCode int
	Type       string
	Message    string
}

func (e *HTTPError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Type != "" {
		return fmt.Sprintf("engine answered %d %s: %s", e.StatusCode, e.Type, msg)
	}
	return fmt.Sprintf("engine answered %d: %s", e.StatusCode, msg)
}

// engineError is the {"error":{…}} object of an OpenAI-style error answer.
type engineError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

// Post POSTs body (JSON) to path and hands a 200 answer to read. Non-200
// answers become *HTTPError (from an OpenAI-style {"error":{…}} body when
// there is one); transport and read failures are annotated with the
// engine's exit when it died meanwhile. read may return an *HTTPError of
// its own, or an error with an EngineAnswer() method (an error event in a
// stream); Post returns those unchanged.
func (p *Process) Post(ctx context.Context, path string, body []byte, read func(*http.Response) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL()+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hreq)
	if err != nil {
		return p.RequestError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeHTTPError(resp)
	}
	if err := read(resp); err != nil {
		var he *HTTPError
		var ae answerError
		if errors.As(err, &he) || errors.As(err, &ae) {
			return err
		}
		return p.RequestError(ctx, err)
	}
	drainClose(resp) // keep the connection reusable
	return nil
}

// answerError is an error read from the engine's answer itself (an error
// event in a stream): Post returns it as it is, not as a transport failure.
type answerError interface {
	error
	EngineAnswer()
}

// RequestError explains a failed request to the engine: ctx's error if ctx
// ended, else the engine's death if it died (waiting briefly for the
// supervisor to notice), else err itself.
func (p *Process) RequestError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t := time.NewTimer(exitNoticeWait)
	defer t.Stop()
	select {
	case <-p.exitedCh:
		p.mu.Lock()
		cause := p.err
		p.mu.Unlock()
		return fmt.Errorf("engine died during request: %w (request: %v)", cause, err)
	case <-t.C:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// decodeHTTPError reads an OpenAI-style {"error":{...}} body.
func decodeHTTPError(resp *http.Response) error {
	e := &HTTPError{StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error *engineError `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		e.Type, e.Message = body.Error.Type, body.Error.Message
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	return e
}

// drainClose reads a little of what is left so the connection can be
// reused, then closes the body.
func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// maxForwardAnswer bounds an answer Forward reads into memory: images
// answers (base64 PNGs) are the largest.
const maxForwardAnswer = 1 << 30

// Forward POSTs body (a JSON request) to path as it is and returns the
// engine's answer. Errors as Post's: *HTTPError for a non-200 answer.
func (p *Process) Forward(ctx context.Context, path string, body []byte) ([]byte, error) {
	var out []byte
	err := p.Post(ctx, path, body, func(resp *http.Response) error {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer+1))
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
		if len(b) > maxForwardAnswer {
			return fmt.Errorf("answer exceeds %d bytes", maxForwardAnswer)
		}
		out = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("forward %s to engine %s: %w", path, p.cfg.Name, err)
	}
	return out, nil
}

// Client returns the HTTP client that reaches the engine (keep-alive,
// loopback).
func (p *Process) Client() *http.Client { return p.client }
