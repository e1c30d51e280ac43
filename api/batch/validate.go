package batch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/vramcram/vramcram/store"
)

// maxErrors bounds the line errors kept for one batch.
const maxErrors = 1000

// requestLine is one line of a batch input file.
type requestLine struct {
	CustomID *string         `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// lineReader reads the lines of an input file from an offset, with the
// offset after each line, skipping blank ones. A line longer than max is
// returned as nil text with errLineTooLong.
type lineReader struct {
	r      *bufio.Reader
	off    int64 // offset of the next byte to read
	number int   // physical lines read (1-based line numbers when started at 0)
	max    int
}

var errLineTooLong = errors.New("line too long")

func newLineReader(r io.Reader, off int64, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), off: off, max: max}
}

// next returns the next non-blank line and the offset just after it; io.EOF
// at the end.
func (lr *lineReader) next() (text []byte, end int64, err error) {
	for {
		var line []byte
		long := false
		for {
			chunk, err := lr.r.ReadSlice('\n')
			lr.off += int64(len(chunk))
			if !long && len(line)+len(chunk) <= lr.max+2 { // the line, then \r\n
				line = append(line, chunk...)
			} else {
				long, line = true, nil
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, lr.off, err
			}
			if errors.Is(err, io.EOF) && len(chunk) == 0 && line == nil && !long {
				return nil, lr.off, io.EOF
			}
			break
		}
		lr.number++
		if long || len(trimNewline(line)) > lr.max {
			return nil, lr.off, errLineTooLong
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			return t, lr.off, nil
		}
	}
}

// maxErrorMessage bounds one line error's message: the messages quote the
// line's values (a url, a custom_id), and the errors are kept in the batch
// record, which must not grow with the input file.
const maxErrorMessage = 300

// clipMessage cuts msg to maxErrorMessage bytes (on a character boundary),
// marking the cut.
func clipMessage(msg string) string {
	if len(msg) <= maxErrorMessage {
		return msg
	}
	cut := maxErrorMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// trimNewline is line without its line terminator (\n or \r\n).
func trimNewline(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// parsed is a checked request line.
type parsed struct {
	customID string
	model    string
	body     json.RawMessage
}

// parseLine checks one request line against the batch's endpoint; a bad
// line gives a BatchError without its line number.
func (m *Manager) parseLine(text []byte, endpoint string) (parsed, *store.BatchError) {
	bad := func(code, param, format string, a ...any) (parsed, *store.BatchError) {
		return parsed{}, &store.BatchError{Code: code, Param: param, Message: fmt.Sprintf(format, a...)}
	}
	var rl requestLine
	if err := json.Unmarshal(text, &rl); err != nil {
		return bad("invalid_json_line", "", "not a JSON object: %v", err)
	}
	if rl.CustomID == nil || *rl.CustomID == "" {
		return bad("missing_custom_id", "custom_id", "custom_id: required, a non-empty string")
	}
	if rl.Method != "POST" {
		return bad("invalid_method", "method", "method: must be POST, got %q", rl.Method)
	}
	if rl.URL != endpoint {
		return bad("mismatched_url", "url", "url: %q differs from the batch's endpoint %q", rl.URL, endpoint)
	}
	var body struct {
		Model  *string          `json:"model"`
		Stream *json.RawMessage `json:"stream"`
	}
	if b := bytes.TrimSpace(rl.Body); len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &body) != nil {
		return bad("invalid_body", "body", "body: required, a JSON object (the request)")
	}
	if body.Stream != nil && string(*body.Stream) != "false" && string(*body.Stream) != "null" {
		return bad("invalid_body", "body.stream", "body.stream: a batch stores one answer per line; leave stream out")
	}
	if body.Model == nil || *body.Model == "" {
		return bad("missing_model", "body.model", "body.model: required")
	}
	model := *body.Model
	if real, ok := m.cfg.Aliases[model]; ok {
		model = real
	}
	served, ok := m.cfg.Endpoints[model]
	if !ok {
		return bad("model_not_found", "body.model", "body.model: unknown model %q", *body.Model)
	}
	if !slices.Contains(served, endpoint) {
		return bad("model_not_supported", "body.model", "body.model: model %q does not serve %s (it serves: %s)",
			*body.Model, endpoint, strings.Join(served, ", "))
	}
	return parsed{customID: *rl.CustomID, model: model, body: rl.Body}, nil
}

// validation is the outcome of checking a whole input file.
type validation struct {
	total  int
	errors []store.BatchError
}

// validateFile checks every line of r: valid JSON, a unique custom_id,
// method POST, url equal to endpoint, a body for a known model that serves
// it, and that each model can be admitted.
func (m *Manager) validateFile(ctx context.Context, r io.Reader, endpoint string) (validation, error) {
	var v validation
	add := func(e store.BatchError) {
		if len(v.errors) < maxErrors {
			e.Message = clipMessage(e.Message)
			v.errors = append(v.errors, e)
		}
	}
	seen := map[string]bool{}
	models := map[string]int{} // model → first line
	lr := newLineReader(r, 0, m.cfg.MaxLineBytes)
	for {
		text, _, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errLineTooLong) {
			add(store.BatchError{Code: "line_too_long", Line: lr.number,
				Message: fmt.Sprintf("longer than %d bytes", m.cfg.MaxLineBytes)})
			continue
		}
		if err != nil {
			return v, fmt.Errorf("read input: %w", err)
		}
		v.total++
		p, bad := m.parseLine(text, endpoint)
		if bad != nil {
			bad.Line = lr.number
			add(*bad)
			continue
		}
		if seen[p.customID] {
			add(store.BatchError{Code: "duplicate_custom_id", Param: "custom_id", Line: lr.number,
				Message: fmt.Sprintf("custom_id: %q is used by an earlier line", p.customID)})
			continue
		}
		seen[p.customID] = true
		if _, ok := models[p.model]; !ok {
			models[p.model] = lr.number
		}
	}
	switch {
	case v.total == 0 && len(v.errors) == 0:
		add(store.BatchError{Code: "empty_file", Message: "the input file has no request lines"})
	case v.total > MaxLines:
		add(store.BatchError{Code: "too_many_requests", Message: fmt.Sprintf("%d requests; a batch takes at most %d", v.total, MaxLines)})
	}
	for model, line := range models {
		if err := m.sched.Admit(ctx, model); err != nil {
			add(store.BatchError{Code: "model_unavailable", Param: "body.model", Line: line,
				Message: fmt.Sprintf("body.model: %v", err)})
		}
	}
	slices.SortStableFunc(v.errors, func(a, b store.BatchError) int { return a.Line - b.Line })
	return v, nil
}
