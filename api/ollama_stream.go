package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// maxEventBytes bounds one server-sent event line of an engine's stream.
const maxEventBytes = 4 << 20

// oaiChunk is what the Ollama door reads of an OpenAI stream chunk.
type oaiChunk struct {
	Choices []struct {
		Delta struct {
			Content          *string `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
			ToolCalls        []struct {
				Index    int `json:"index"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Timings *struct {
		PromptN     int     `json:"prompt_n"`
		PromptMS    float64 `json:"prompt_ms"`
		PredictedN  int     `json:"predicted_n"`
		PredictedMS float64 `json:"predicted_ms"`
	} `json:"timings"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// ollamaTranscript turns one engine stream into Ollama's answer: NDJSON
// lines as the text comes, or one object at the end. One request's
// goroutine owns it.
type ollamaTranscript struct {
	s    *Server
	c    echo.Context
	x    ollamaCall
	load time.Duration

	text, thinking []byte
	names          []string // tool calls by index: name and argument text
	args           [][]byte
	finish         string
	promptN, evalN int
	promptMS       float64
	evalMS         float64
}

// relay reads the engine's event stream to its end. It returns nil when
// the answer was complete, context.Canceled when the client left, else
// what went wrong (an *Error when nothing was written yet).
func (t *ollamaTranscript) relay(body io.Reader) error {
	r := bufio.NewReaderSize(body, 16<<10)
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break // llama-server ends its stream with [DONE]; EOF is as good
			}
			if t.c.Request().Context().Err() != nil {
				return context.Canceled
			}
			return t.fail(fmt.Errorf("engine failed mid-answer: %v", err))
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue // event names, comments, blank lines
		}
		if bytes.Equal(data, []byte("[DONE]")) {
			break
		}
		var ch oaiChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return t.fail(fmt.Errorf("engine chunk: %v", err))
		}
		if ch.Error != nil {
			return t.fail(&Error{Status: http.StatusInternalServerError, Code: CodeEngineFailed, Message: ch.Error.Message})
		}
		if err := t.add(ch); err != nil {
			return err
		}
	}
	return t.done()
}

// readLine reads one line (without its end) of at most maxEventBytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxEventBytes {
			return nil, fmt.Errorf("event longer than %d bytes", maxEventBytes)
		}
		switch {
		case err == nil:
			return bytes.TrimRight(line, "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return bytes.TrimRight(line, "\r\n"), nil
		default:
			return nil, err
		}
	}
}

// add takes one chunk: text is written at once when streaming.
func (t *ollamaTranscript) add(ch oaiChunk) error {
	if ch.Usage != nil {
		t.promptN, t.evalN = ch.Usage.PromptTokens, ch.Usage.CompletionTokens
	}
	if tm := ch.Timings; tm != nil {
		t.promptN, t.evalN, t.promptMS, t.evalMS = tm.PromptN, tm.PredictedN, tm.PromptMS, tm.PredictedMS
	}
	for _, choice := range ch.Choices {
		if choice.FinishReason != nil {
			t.finish = *choice.FinishReason
		}
		var text, thinking string
		if d := choice.Delta.Content; d != nil {
			text = *d
		}
		if d := choice.Text; d != nil {
			text += *d
		}
		if d := choice.Delta.ReasoningContent; d != nil {
			thinking = *d
		}
		for _, tc := range choice.Delta.ToolCalls {
			for len(t.names) <= tc.Index && tc.Index < 128 {
				t.names, t.args = append(t.names, ""), append(t.args, nil)
			}
			if tc.Index >= 0 && tc.Index < len(t.names) {
				t.names[tc.Index] += tc.Function.Name
				t.args[tc.Index] = append(t.args[tc.Index], tc.Function.Arguments...)
			}
		}
		if text == "" && thinking == "" {
			continue
		}
		t.text, t.thinking = append(t.text, text...), append(t.thinking, thinking...)
		if t.x.stream {
			if err := t.write(t.line(text, thinking, nil, false)); err != nil {
				return err
			}
		}
	}
	return nil
}

// toolCalls are the finished tool calls in Ollama's shape.
func (t *ollamaTranscript) toolCalls() []ollamaToolCall {
	out := make([]ollamaToolCall, 0, len(t.names))
	for k, name := range t.names {
		var tc ollamaToolCall
		tc.Function.Name = name
		tc.Function.Arguments = json.RawMessage("{}")
		if json.Valid(t.args[k]) {
			tc.Function.Arguments = json.RawMessage(t.args[k])
		}
		out = append(out, tc)
	}
	return out
}

// done writes the last line (streaming) or the whole answer.
func (t *ollamaTranscript) done() error {
	calls := t.toolCalls()
	if t.x.stream {
		if len(calls) > 0 { // Ollama sends tool calls in a chunk of their own
			if err := t.write(t.line("", "", calls, false)); err != nil {
				return err
			}
		}
		return t.write(t.line("", "", nil, true))
	}
	return t.write(t.line(string(t.text), string(t.thinking), calls, true))
}

// line builds one answer object.
func (t *ollamaTranscript) line(text, thinking string, calls []ollamaToolCall, done bool) map[string]any {
	v := map[string]any{"model": t.x.name, "created_at": t.s.now().UTC(), "done": done}
	if t.x.chat {
		m := map[string]any{"role": "assistant", "content": text}
		if thinking != "" {
			m["thinking"] = thinking
		}
		if len(calls) > 0 {
			m["tool_calls"] = calls
		}
		v["message"] = m
	} else {
		v["response"] = text
		if thinking != "" {
			v["thinking"] = thinking
		}
	}
	if !done {
		return v
	}
	reason := "stop"
	if t.finish == "length" {
		reason = "length"
	}
	ms := func(f float64) int64 { return int64(f * float64(time.Millisecond)) }
	v["done_reason"] = reason
	v["total_duration"] = int64(t.s.now().Sub(t.x.start))
	v["load_duration"] = int64(t.load)
	v["prompt_eval_count"], v["prompt_eval_duration"] = t.promptN, ms(t.promptMS)
	v["eval_count"], v["eval_duration"] = t.evalN, ms(t.evalMS)
	return v
}

// write sends one NDJSON line (or the one JSON answer), flushed.
func (t *ollamaTranscript) write(v map[string]any) error {
	w := t.c.Response()
	if !w.Committed {
		ct := "application/json; charset=utf-8"
		if t.x.stream {
			ct = "application/x-ndjson"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("answer line: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return context.Canceled
	}
	if err := http.NewResponseController(w.Writer).Flush(); err != nil {
		return context.Canceled
	}
	return nil
}

// fail ends the answer with err: an Ollama error line when the stream is
// open, else err is returned for the error handler.
func (t *ollamaTranscript) fail(err error) error {
	if !t.c.Response().Committed {
		var ae *Error
		if errors.As(err, &ae) {
			return ae
		}
		t.s.log.Warn("engine failed mid-answer", "model", t.x.model, "err", err)
		return &Error{Status: http.StatusBadGateway, Code: CodeEngineFailed,
			Message: fmt.Sprintf("the engine of model %q failed mid-answer", t.x.model)}
	}
	_ = t.write(map[string]any{"error": err.Error()})
	return err
}
