package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// routeUpstream registers /upstream/{model}/{path…}: raw access, any
// method, to one model's engine (loading it if needed) for what the routes
// of passthrough.go do not name. The request waits for a slot and counts
// against the budget like any other; the answer is relayed byte for byte.
func (s *Server) routeUpstream(e *echo.Echo) {
	e.Any("/upstream/:model", s.upstream)
	e.Any("/upstream/:model/*", s.upstream)
}

func (s *Server) upstream(c echo.Context) error {
	req := c.Request()
	model, ok := s.resolveModel(c.Param("model"))
	if !ok {
		return s.unknownModel(c.Param("model"))
	}
	call := engineCall{model: model, method: req.Method, path: "/" + c.Param("*")}
	if req.URL.RawQuery != "" {
		call.path += "?" + req.URL.RawQuery
	}
	if req.ContentLength != 0 && req.Method != http.MethodGet && req.Method != http.MethodHead {
		body, err := s.readBody(c, nil)
		if err != nil {
			return err
		}
		call.body, call.contentType = body, req.Header["Content-Type"]
	}
	return s.serveLeased(c, call)
}
