package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// newEngineClient returns the HTTP client of every proxied request: one
// pooled transport for all engines, keep-alive, enough idle connections per
// engine for its slots and bursts, no compression (loopback), no timeout of
// its own (the client's request context bounds each call).
func newEngineClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
}

// relayBufs are the copy buffers of relay, pooled so that a request does not
// allocate one.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// forward sends call to the engine at base URL url, under ctx (which ends
// with the client's request or with the slot), and relays the answer. It
// returns the outcome for the slot — nil when the engine answered in full
// with a success status, context.Canceled when the client left, else what
// went wrong — and the error for echo to answer when nothing was relayed.
func (s *Server) forward(c echo.Context, ctx context.Context, url string, call engineCall) (outcome, err error) {
	model, method := call.model, call.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if call.body != nil {
		body = bytes.NewReader(call.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url+call.path, body)
	if err != nil {
		return err, fmt.Errorf("engine request for %s: %w", model, err)
	}
	if call.contentType != nil {
		req.Header["Content-Type"] = call.contentType
	}
	resp, err := s.engines.Do(req)
	if err != nil {
		if cerr := c.Request().Context().Err(); cerr != nil {
			return cerr, nil // the client left
		}
		s.log.Warn("engine request failed", "model", model, "err", err)
		return fmt.Errorf("engine request: %v", err), &Error{Status: http.StatusBadGateway, Code: CodeEngineFailed,
			Message: fmt.Sprintf("the engine of model %q did not answer; retry", model)}
	}
	defer resp.Body.Close()
	resp.Body = call.tail.wrap(resp.Body) // keeps the answer's end for its tokens (usage_tail.go)
	if err := s.relay(c, resp, model); err != nil {
		return err, nil
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("engine answered %s", resp.Status), nil
	}
	return nil, nil
}

var (
	jsonContentType = []string{"application/json"}
	noCache         = []string{"no-cache"}
	accelNo         = []string{"no"}
)

// relay copies the engine's answer to the client as it comes: status,
// Content-Type and length, then the body bytes untouched, flushed after each
// read when the answer is an event stream. It returns context.Canceled when
// the client left and the engine's error when it failed mid-answer; an event
// stream then ends with an error event, as llama-server sends one for its
// own mid-stream errors.
func (s *Server) relay(c echo.Context, resp *http.Response, model string) error {
	w := c.Response()
	if w.Committed {
		return s.relayIntoStream(c, resp, model)
	}
	h := w.Header()
	ct := resp.Header["Content-Type"]
	if len(ct) > 0 {
		h["Content-Type"] = ct
	}
	sse := len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
	if sse {
		h["Cache-Control"], h["X-Accel-Buffering"] = noCache, accelNo
	} else if resp.ContentLength >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	return s.copyBody(c, resp, model, sse)
}

// relayIntoStream relays the engine's answer into an event stream that is
// already open (comments were sent while the request waited): an event
// stream is copied as it comes; any other answer (an engine error) becomes
// one data event.
func (s *Server) relayIntoStream(c echo.Context, resp *http.Response, model string) error {
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return s.copyBody(c, resp, model, true)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read engine answer: %v", err)
	}
	_, _ = fmt.Fprintf(c.Response(), "data: %s\n\n", bytes.TrimSpace(b))
	_ = http.NewResponseController(c.Response().Writer).Flush()
	return nil
}

// copyBody copies the engine's answer to the client, flushing after each
// read for an event stream. It returns context.Canceled when the client
// left and the engine's error when it failed mid-answer; an event stream
// then ends with an error event, as llama-server sends one for its own
// mid-stream errors.
func (s *Server) copyBody(c echo.Context, resp *http.Response, model string, sse bool) error {
	w := c.Response()
	rc := http.NewResponseController(w.Writer)
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return context.Canceled // the client left; closing the body aborts the engine's request
			}
			if sse {
				if err := rc.Flush(); err != nil {
					return context.Canceled
				}
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return nil
		case c.Request().Context().Err() != nil:
			return context.Canceled // the client left
		default:
			s.log.Warn("engine failed mid-answer", "model", model, "err", rerr)
			if sse {
				writeStreamError(c, &Error{Status: http.StatusBadGateway, Code: CodeEngineFailed,
					Message: fmt.Sprintf("the engine of model %q failed mid-answer", model)})
			}
			return fmt.Errorf("engine failed mid-answer: %v", rerr)
		}
	}
}
