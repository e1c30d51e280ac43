package api

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// ForwardedHeader marks a request one node relayed to another; a request
// that carries it is always served where it lands, so none loops.
const ForwardedHeader = "X-VramCram-Forwarded"

// relayedHeaders are the client's headers a relayed request keeps: its key
// (either way of sending one), what it accepts, and the body's type (a
// multipart form's boundary included).
var relayedHeaders = []string{"Authorization", "X-Api-Key", "Accept", "Content-Type"}

// answerHeaders are the other node's answer headers the client gets.
var answerHeaders = []string{"Content-Type", "Cache-Control", "X-Accel-Buffering", "Retry-After"}

// serveRemote is the one seam through which every interactive door (the
// OpenAI routes, the passthrough routes with the Anthropic and Responses
// ones, the Ollama door) relays a request it has read (body, nil for a
// GET) and resolved to model: when another node of the fleet has model
// loaded while this one has not (Config.RemoteFor), the request goes there
// with the same method, path, query and body bytes, so that node answers
// through the same door, and its answer is streamed back as it comes.
//
// It reports whether it answered. It does not (nothing was written, and
// the door serves the request here as usual) when no node is named, when
// the request was itself relayed (ForwardedHeader: no loops), when the
// node cannot be reached, or when it refuses the client's key (401: the
// fleet's nodes do not share keys).
func (s *Server) serveRemote(c echo.Context, model string, body []byte) bool {
	r := c.Request()
	if s.cfg.RemoteFor == nil || r.Header.Get(ForwardedHeader) != "" {
		return false
	}
	base, ok := s.cfg.RemoteFor(r.Context(), model)
	if !ok {
		return false
	}
	resp, err := s.remoteDo(r, base, body)
	if err != nil {
		if r.Context().Err() != nil {
			return true // the client left: nobody to answer
		}
		s.log.Warn("fleet relay failed; serving here", "model", model, "node", base, "path", r.URL.Path, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		s.log.Warn("fleet relay: the node refused the client's key; serving here", "model", model, "node", base, "path", r.URL.Path)
		return false
	}
	s.log.Debug("fleet relay", "model", model, "node", base, "path", r.URL.Path, "status", resp.StatusCode)
	if err := s.relayRemote(c, resp, model); err != nil {
		s.log.Warn("fleet relay answer", "model", model, "node", base, "path", r.URL.Path, "err", err)
	}
	return true
}

// remoteDo sends r, whose body was body, to the node at base under r's
// context, with the client's relayedHeaders and ForwardedHeader naming
// this node.
func (s *Server) remoteDo(r *http.Request, base string, body []byte) (*http.Response, error) {
	var rb io.Reader = http.NoBody
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), rb)
	if err != nil {
		return nil, err
	}
	for _, h := range relayedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header["Content-Type"] = jsonContentType
	}
	req.Header.Set(ForwardedHeader, s.cfg.Node)
	return s.engines.Do(req)
}

// relayRemote writes the other node's answer: its status, answerHeaders
// and body, an event stream or an NDJSON stream flushed as it comes (a
// stream cut short ends with an error in the door's shape, writeStreamError).
func (s *Server) relayRemote(c echo.Context, resp *http.Response, model string) error {
	h := c.Response().Header()
	for _, k := range answerHeaders {
		if v := resp.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	ct := resp.Header.Get("Content-Type")
	stream := strings.HasPrefix(ct, "text/event-stream") || strings.HasPrefix(ct, "application/x-ndjson")
	if !stream && resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	c.Response().WriteHeader(resp.StatusCode)
	return s.copyBody(c, resp, model, stream)
}
