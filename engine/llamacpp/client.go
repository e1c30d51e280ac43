package llamacpp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vramcram/vramcram/runner"
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
	CacheN             int     `json:"cache_n"`
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
	Error           *streamError `json:"error"`
}

// Complete runs one completion on p, a llama-server (POST /completion). With
// onToken nil the answer comes in one piece; otherwise it is streamed (SSE)
// and onToken gets each piece of text as it arrives, in order, from the
// calling goroutine; Text is their concatenation.
//
// Cancelling ctx aborts the HTTP request, and llama-server stops generating
// for it. Errors: ctx's error (wrapped) when ctx ended; *runner.HTTPError when the
// engine answered non-200 (a refused request: 400 exceed_context_size_error,
// invalid_request_error; or 500); *StreamError when a stream ended with an
// error event instead of its final event; when the engine died
// during the request, an error wrapping Err() (a *runner.ExitError, or
// ErrHeartbeatLost/ErrStopped). On error the result holds what was generated
// so far.
func Complete(ctx context.Context, p *runner.Process, req CompletionRequest, onToken func(string)) (CompletionResult, error) {
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
		return CompletionResult{}, fmt.Errorf("complete on engine %s: %w", p.Name(), err)
	}
	var res CompletionResult
	err = p.Post(ctx, "/completion", body, func(resp *http.Response) error {
		if onToken == nil {
			var c completionChunk
			if err := json.NewDecoder(io.LimitReader(resp.Body, maxEventLine)).Decode(&c); err != nil {
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
				return false, &StreamError{Code: c.Error.Code, Type: c.Error.Type, Message: c.Error.Message}
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
		return res, fmt.Errorf("complete on engine %s: %w", p.Name(), err)
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

// readSSE calls fn with the data of each server-sent event until fn reports
// done, the stream sends [DONE], or it ends. Comments (":" pings) and other
// fields are skipped. An event stream that ends before fn reported done is
// io.ErrUnexpectedEOF.
func readSSE(r io.Reader, fn func(data []byte) (done bool, err error)) error {
	br := bufio.NewReaderSize(r, 32*1024)
	for {
		line, err := readLine(br, maxEventLine)
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

// maxEventLine bounds one line of an engine's event stream: a chunk is a
// few hundred bytes (a final one with timings and probabilities a few
// KiB); a line past this is a broken or hostile engine, not an answer.
const maxEventLine = 16 << 20

// readLine reads one line of br, its newline included, failing once it
// passes limit bytes instead of buffering it all.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		part, err := br.ReadSlice('\n')
		if len(line)+len(part) > limit {
			return nil, fmt.Errorf("engine event line longer than %d bytes", limit)
		}
		line = append(line, part...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// streamError is an error event of a stream.
type streamError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
}

// StreamError is an error event that ended a stream after it began:
// llama-server sends data: {"error":{…}} and neither a final event nor
// [DONE] (generation failed, e.g. a chat output its parser refused, common
// with random-weight models). The request itself was accepted, so this is
// the engine failing, never a refusal of the request: it does not unwrap to
// a *runner.HTTPError and so never becomes engine.ErrRejected.
type StreamError struct {
	Code    int
	Type    string
	Message string
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("engine stream ended with error %d %s: %s", e.Code, e.Type, e.Message)
}

// EngineAnswer marks the error as the engine's own answer (runner.Post
// passes it on unchanged).
func (e *StreamError) EngineAnswer() {}
