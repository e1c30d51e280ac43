package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// How long a streaming request waits for a slot before its event stream
// opens with a comment, and how often the comment repeats (Server fields
// start from these). SSE comments (lines starting with ':') are ignored by
// clients but keep proxies and client read timeouts from giving up during
// a model load.
const (
	defaultWaitNoteAfter = time.Second
	defaultWaitNoteEvery = 5 * time.Second
)

// waitNotes writes SSE comments to a streaming client while its request
// waits for a slot. Only its goroutine writes until stop returns.
type waitNotes struct {
	quit    chan struct{}
	done    chan struct{}
	started bool // the response was committed; set by the goroutine
}

// noteWaiting starts the comments for a streaming request for model.
func (s *Server) noteWaiting(c echo.Context, model string) *waitNotes {
	w := &waitNotes{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTimer(s.waitNoteAfter)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
			if !w.started {
				openStream(c)
				w.started = true
			}
			if _, err := fmt.Fprintf(c.Response(), ": waiting for a slot of model %s\n\n", model); err != nil {
				return
			}
			if err := http.NewResponseController(c.Response().Writer).Flush(); err != nil {
				return
			}
			t.Reset(s.waitNoteEvery)
		}
	}()
	return w
}

// stop ends the comments and reports whether the event stream was opened.
// A nil waitNotes (a request that does not stream) reports false.
func (w *waitNotes) stop() bool {
	if w == nil {
		return false
	}
	close(w.quit)
	<-w.done
	return w.started
}

// openStream commits a 200 event-stream response.
func openStream(c echo.Context) {
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream")
	h["Cache-Control"], h["X-Accel-Buffering"] = noCache, accelNo
	c.Response().WriteHeader(http.StatusOK)
}

// writeStreamError ends an open event stream with an error event in the
// OpenAI error shape, as llama-server does for errors mid-stream (the
// Anthropic door's in Anthropic's; the Ollama door's NDJSON stream, relayed
// from another node, with Ollama's error line).
func writeStreamError(c echo.Context, ae *Error) {
	switch doorOf(c.Request().URL.Path) {
	case doorAnthropic:
		writeAnthropicStreamError(c, ae)
		return
	case doorOllama:
		b, _ := json.Marshal(map[string]string{"error": ae.Message})
		_, _ = c.Response().Write(append(b, '\n'))
		_ = http.NewResponseController(c.Response().Writer).Flush()
		return
	}
	e := openAIError{Message: ae.Message, Type: openAIType(ae.Status), Code: ae.Code}
	if ae.Param != "" {
		e.Param = &ae.Param
	}
	b, _ := json.Marshal(openAIErrorBody{Error: e})
	_, _ = fmt.Fprintf(c.Response(), "data: %s\n\n", b)
	_ = http.NewResponseController(c.Response().Writer).Flush()
}

// asError turns err into an *Error (a 500 for anything unexpected).
func asError(err error) *Error {
	if ae, ok := err.(*Error); ok {
		return ae
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()}
}
