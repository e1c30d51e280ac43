package runner

import (
	"bufio"
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

// CompletionRequest is one llama-server POST /completion. Nil pointers and
// zero values leave the engine's defaults.
type CompletionRequest struct {
	Prompt      string
	MaxTokens   int // n_predict; 0 = engine default (until EOS or context full)
	Temperature *float64
	TopP        *float64
	Stop        []string
	Seed        *int64
}

// CompletionResult is what the engine generated. StopType is llama-server's:
// "eos" (end of sequence), "word" (a Stop string), "limit" (MaxTokens) or
// "none".
type CompletionResult struct {
	Text            string
	TokensPredicted int
	TokensEvaluated int // prompt tokens
	StopType        string
	StoppingWord    string
	Timings         Timings
}

// Timings are llama-server's per-request figures (milliseconds).
type Timings struct {
	PromptN            int     `json:"prompt_n"`
	PromptMS           float64 `json:"prompt_ms"`
	PredictedN         int     `json:"predicted_n"`
	PredictedMS        float64 `json:"predicted_ms"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
}

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

// completionBody is the JSON llama-server's /completion reads.
type completionBody struct {
	Prompt      string   `json:"prompt"`
	NPredict    int      `json:"n_predict,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
	Stream      bool     `json:"stream"`
}

// completionChunk is the non-stream answer and each SSE event of a stream;
// the last event has "stop": true and the totals.
type completionChunk struct {
	Content         string       `json:"content"`
	Stop            bool         `json:"stop"`
	StopType        string       `json:"stop_type"`
	StoppingWord    string       `json:"stopping_word"`
	TokensPredicted int          `json:"tokens_predicted"`
	TokensEvaluated int          `json:"tokens_evaluated"`
	Timings         *Timings     `json:"timings"`
	Error           *engineError `json:"error"`
}

type engineError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

// Complete runs one completion on the engine (POST /completion). With
// onToken nil the answer comes in one piece; otherwise it is streamed (SSE)
// and onToken gets each piece of text as it arrives, in order, from the
// calling goroutine; Text is their concatenation.
//
// Cancelling ctx aborts the HTTP request, and llama-server stops generating
// for it. Errors: ctx's error (wrapped) when ctx ended; *HTTPError when the
// engine answered non-200 or sent an error event; when the engine died
// during the request, an error wrapping Err() (an *ExitError, or
// ErrHeartbeatLost/ErrStopped). On error the result holds what was generated
// so far.
func (p *Process) Complete(ctx context.Context, req CompletionRequest, onToken func(string)) (CompletionResult, error) {
	body, err := json.Marshal(completionBody{
		Prompt:      req.Prompt,
		NPredict:    req.MaxTokens,
		Temperature: req.Temperature,
		TopP:        req.TopP,
		Stop:        req.Stop,
		Seed:        req.Seed,
		Stream:      onToken != nil,
	})
	if err != nil {
		return CompletionResult{}, fmt.Errorf("complete on engine %s: %w", p.cfg.Name, err)
	}
	var res CompletionResult
	err = p.postJSON(ctx, "/completion", body, func(resp *http.Response) error {
		if onToken == nil {
			var c completionChunk
			if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
				return fmt.Errorf("decode answer: %w", err)
			}
			res.Text = c.Content
			res.apply(&c)
			return nil
		}
		var text strings.Builder
		defer func() { res.Text = text.String() }()
		return readSSE(resp.Body, func(data []byte) (bool, error) {
			if err := ctx.Err(); err != nil {
				return false, err // events still buffered after cancel don't count
			}
			var c completionChunk
			if err := json.Unmarshal(data, &c); err != nil {
				return false, fmt.Errorf("decode stream event: %w", err)
			}
			if c.Error != nil {
				return false, &HTTPError{StatusCode: c.Error.Code, Type: c.Error.Type, Message: c.Error.Message}
			}
			if c.Content != "" {
				text.WriteString(c.Content)
				onToken(c.Content)
			}
			if c.Stop {
				res.apply(&c)
				return true, nil
			}
			return false, nil
		})
	})
	if err != nil {
		return res, fmt.Errorf("complete on engine %s: %w", p.cfg.Name, err)
	}
	return res, nil
}

func (r *CompletionResult) apply(c *completionChunk) {
	r.TokensPredicted = c.TokensPredicted
	r.TokensEvaluated = c.TokensEvaluated
	r.StopType = c.StopType
	r.StoppingWord = c.StoppingWord
	if c.Timings != nil {
		r.Timings = *c.Timings
	}
}

// postJSON POSTs body to path and hands a 200 answer to read. Non-200
// answers become *HTTPError; transport and read failures are annotated
// with the engine's exit when it died meanwhile.
func (p *Process) postJSON(ctx context.Context, path string, body []byte, read func(*http.Response) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL()+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(hreq)
	if err != nil {
		return p.requestError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeHTTPError(resp)
	}
	if err := read(resp); err != nil {
		var he *HTTPError
		if errors.As(err, &he) {
			return err
		}
		return p.requestError(ctx, err)
	}
	drainClose(resp) // keep the connection reusable
	return nil
}

// requestError explains a failed request: ctx's error if ctx ended, else
// the engine's death if it died (waiting briefly for the supervisor to
// notice), else err itself.
func (p *Process) requestError(ctx context.Context, err error) error {
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

// decodeHTTPError reads llama-server's {"error":{...}} body.
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

// readSSE calls fn with the data of each server-sent event until fn reports
// done, the stream sends [DONE], or it ends. Comments (":" pings) and other
// fields are skipped. An event stream that ends before fn reported done is
// io.ErrUnexpectedEOF.
func readSSE(r io.Reader, fn func(data []byte) (done bool, err error)) error {
	br := bufio.NewReaderSize(r, 32*1024)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = bytes.TrimPrefix(data, []byte(" "))
			if string(data) == "[DONE]" {
				return io.ErrUnexpectedEOF // [DONE] before a final chunk
			}
			done, ferr := fn(data)
			if ferr != nil || done {
				return ferr
			}
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
	}
}

// drainClose reads a little of what is left so the connection can be
// reused, then closes the body.
func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
