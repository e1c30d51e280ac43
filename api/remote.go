package api

import (
	"bytes"
	"net/http"

	"github.com/labstack/echo/v4"
)

// ForwardedHeader marks a request one node relayed to another; a request
// that carries it is always served where it lands, so none loops.
const ForwardedHeader = "X-VramCram-Forwarded"

// relayedHeaders are the client's headers a relayed request keeps.
var relayedHeaders = []string{"Authorization", "X-Api-Key", "Accept"}

// serveRemote relays an OpenAI-route request to another node of the fleet
// that has model loaded while this one has not (Config.RemoteFor), at the
// same path with the same body. It reports whether it answered: false when
// no node is named or the node did not answer (nothing was written), and
// the request is then served here as usual.
func (s *Server) serveRemote(c echo.Context, model string, body []byte) bool {
	r := c.Request()
	if s.cfg.RemoteFor == nil || r.Header.Get(ForwardedHeader) != "" {
		return false
	}
	base, ok := s.cfg.RemoteFor(r.Context(), model)
	if !ok {
		return false
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, base+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		s.log.Warn("fleet relay request", "model", model, "node", base, "err", err)
		return false
	}
	req.Header["Content-Type"] = jsonContentType
	for _, h := range relayedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set(ForwardedHeader, s.cfg.Node)
	resp, err := s.engines.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return true // the client left: nobody to answer
		}
		s.log.Warn("fleet relay failed; serving here", "model", model, "node", base, "err", err)
		return false
	}
	defer resp.Body.Close()
	s.log.Debug("fleet relay", "model", model, "node", base, "status", resp.StatusCode)
	if err := s.relay(c, resp, model); err != nil {
		s.log.Warn("fleet relay answer", "model", model, "node", base, "err", err)
	}
	return true
}
