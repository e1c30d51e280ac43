package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The supervisor's tests drive the stand-in engine (which plays
// llama-server) with this small test client. The product's /completion
// client is engine/llamacpp's; runner knows no engine's protocol.

// standInArgs is the stand-in's argv for model on port, then extra.
func standInArgs(model string, extra ...string) func(port int) []string {
	extra = append([]string(nil), extra...)
	return func(port int) []string {
		args := []string{"-m", model, "--host", "127.0.0.1", "--port", strconv.Itoa(port), "-c", "512", "-ngl", "0", "--parallel", "2"}
		return append(args, extra...)
	}
}

// completion is what the stand-in generated.
type completion struct {
	Text            string
	TokensPredicted int `json:"tokens_predicted"`
}

// complete POSTs prompt to /completion; with onToken set it streams and
// hands each piece over as it arrives.
func complete(ctx context.Context, p *Process, prompt string, onToken func(string)) (completion, error) {
	body, _ := json.Marshal(map[string]any{"prompt": prompt, "stream": onToken != nil})
	var res completion
	err := p.Post(ctx, "/completion", body, func(resp *http.Response) error {
		if onToken == nil {
			var c struct {
				Content         string `json:"content"`
				TokensPredicted int    `json:"tokens_predicted"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
				return err
			}
			res = completion{Text: c.Content, TokensPredicted: c.TokensPredicted}
			return nil
		}
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadBytes('\n')
			if data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: ")); ok {
				var c struct {
					Content         string `json:"content"`
					Stop            bool   `json:"stop"`
					TokensPredicted int    `json:"tokens_predicted"`
					Error           *struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if jerr := json.Unmarshal(data, &c); jerr != nil {
					return jerr
				}
				if c.Error != nil {
					return &HTTPError{StatusCode: c.Error.Code, Message: c.Error.Message}
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res.Text += c.Content
				if c.Content != "" {
					onToken(c.Content)
				}
				if c.Stop {
					res.TokensPredicted = c.TokensPredicted
					return nil
				}
			}
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			if err != nil {
				return err
			}
		}
	})
	if err != nil {
		return res, fmt.Errorf("complete on engine %s: %w", p.Name(), err)
	}
	return res, nil
}

// tailHas reports whether a line of tail contains s.
func tailHas(tail []string, s string) bool {
	return strings.Contains(strings.Join(tail, "\n"), s)
}
