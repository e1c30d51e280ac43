package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/sdcpp"
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
	path, err := upstreamPath(req.URL)
	if err != nil {
		return err
	}
	call := engineCall{model: model, method: req.Method, path: path}
	if req.URL.RawQuery != "" {
		call.path += "?" + req.URL.RawQuery
	}
	if req.ContentLength != 0 && req.Method != http.MethodGet && req.Method != http.MethodHead {
		body, err := s.readBody(c, nil)
		if err != nil {
			return err
		}
		if s.cfg.ModelTypes[model] == engine.KindDiffusion && namesExtraArgsTag(body) {
			return apiErr(http.StatusBadRequest, CodeInvalid, "body: must not contain sd_cpp_extra_args, in any form "+
				"(sd-server's parameter tag: it bypasses the checks and a long one crashes the server)")
		}
		call.body, call.contentType = body, req.Header["Content-Type"]
	}
	return s.serveLeased(c, call)
}

// namesExtraArgsTag reports whether body names sd-server's parameter tag:
// as it is, or in a JSON string once decoded (where \u escapes can spell
// it without its letters appearing in the bytes).
func namesExtraArgsTag(body []byte) bool {
	if sdcpp.HasExtraArgsTag(string(body)) {
		return true
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	return anyStringNamesTag(v)
}

func anyStringNamesTag(v any) bool {
	switch v := v.(type) {
	case string:
		return sdcpp.HasExtraArgsTag(v)
	case []any:
		for _, e := range v {
			if anyStringNamesTag(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if sdcpp.HasExtraArgsTag(k) || anyStringNamesTag(e) {
				return true
			}
		}
	}
	return false
}

// upstreamPath returns the engine path of an /upstream/{model}/{path…}
// request as the client escaped it ("%3F" stays an escaped "?", not the
// start of a query), or a 400 for a path no engine request can carry (a
// bad escape, a control character), checked before a slot is taken.
func upstreamPath(u *url.URL) (string, error) {
	rest := strings.TrimPrefix(u.EscapedPath(), "/upstream/")
	_, rest, _ = strings.Cut(rest, "/") // past the model's segment
	bad := func(why string) error {
		return apiErr(http.StatusBadRequest, CodeInvalid, "path: "+why)
	}
	plain, err := url.PathUnescape(rest)
	if err != nil {
		return "", bad(err.Error())
	}
	if strings.ContainsFunc(plain, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", bad("must not contain control characters")
	}
	return "/" + rest, nil
}
