package api

import (
	"github.com/vramcram/vramcram/engine"

	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// passRoute is one llama-server route that VramCram forwards as it is to
// the engine of the model the request names: in the JSON body's "model", in
// the multipart form field "model" (transcriptions), or in the query's
// ?model= (GET routes, which have no body).
type passRoute struct {
	path      string
	multipart bool // the body is a multipart form
	get, post bool // the methods served
}

// passRoutes are the routes of llama-server (tools/server/server.cpp) that
// VramCram passes through besides the checked OpenAI routes of openai.go.
var passRoutes = []passRoute{
	{path: "/v1/messages", post: true},
	{path: "/v1/messages/count_tokens", post: true},
	{path: "/v1/responses", post: true},
	{path: "/v1/responses/input_tokens", post: true},
	{path: "/v1/chat/completions/input_tokens", post: true},
	{path: "/v1/audio/transcriptions", post: true, multipart: true},
	{path: "/v1/rerank", post: true},
	{path: "/v1/reranking", post: true},
	{path: "/rerank", post: true},
	{path: "/reranking", post: true},
	{path: "/infill", post: true},
	{path: "/tokenize", post: true},
	{path: "/detokenize", post: true},
	{path: "/apply-template", post: true},
	{path: "/props", get: true, post: true},
	{path: "/slots", get: true},
	{path: "/lora-adapters", get: true, post: true},
}

// isPassPath reports whether path is one of passRoutes (errors there take
// the OpenAI shape, as llama-server's own do).
func isPassPath(path string) bool {
	for _, r := range passRoutes {
		if r.path == path {
			return true
		}
	}
	return false
}

// routePassthrough registers passRoutes on e.
func (s *Server) routePassthrough(e *echo.Echo) {
	for _, r := range passRoutes {
		if r.post {
			e.POST(r.path, s.passthrough(r))
		}
		if r.get {
			e.GET(r.path, s.passthrough(r))
		}
	}
}

// passthrough forwards a request of route r through serveLeased: it waits
// for a slot, counts against the budget like any other request, and its
// answer is relayed byte for byte.
func (s *Server) passthrough(r passRoute) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		call := engineCall{method: req.Method, path: r.path}
		var name string
		if req.Method == http.MethodGet {
			name = c.QueryParam("model")
			if q := queryWithout(req.URL.Query(), "model"); q != "" {
				call.path += "?" + q
			}
		} else {
			read := s.readJSONBody
			if r.multipart {
				read = s.readBody
			}
			body, err := read(c, nil)
			if err != nil {
				return err
			}
			call.body = body
			if r.multipart {
				call.contentType = req.Header["Content-Type"]
				name, err = multipartModel(req.Header.Get("Content-Type"), body)
			} else {
				call.contentType = jsonContentType
				name, call.stream, err = jsonModel(body)
			}
			if err != nil {
				return err
			}
		}
		model, err := s.routeModel(name, r.path)
		if err != nil {
			return err
		}
		if s.serveRemote(c, model, call.body) {
			return nil
		}
		call.model = model
		return s.serveLeased(c, call)
	}
}

// queryWithout encodes q without key.
func queryWithout(q url.Values, key string) string {
	q.Del(key)
	return q.Encode()
}

// jsonModel reads "model" and "stream" of a JSON body.
func jsonModel(body []byte) (string, bool, error) {
	var probe struct {
		Model  *string `json:"model"`
		Stream any     `json:"stream"`
	}
	if err := decodeJSON(body, &probe, false); err != nil {
		return "", false, err
	}
	if probe.Model == nil {
		return "", false, nil
	}
	stream, _ := probe.Stream.(bool)
	return *probe.Model, stream, nil
}

// multipartModel finds the form field "model" of a multipart body.
func multipartModel(contentType string, body []byte) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return "", &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMed,
			Message: "this route takes a multipart/form-data body (fields: file, model, …)"}
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			return "", apiErr(http.StatusBadRequest, CodeInvalid, "multipart body: "+err.Error())
		}
		if p.FormName() == "model" && p.FileName() == "" {
			v, err := io.ReadAll(io.LimitReader(p, 1024))
			if err != nil {
				return "", apiErr(http.StatusBadRequest, CodeInvalid, "multipart body: "+err.Error())
			}
			return strings.TrimSpace(string(v)), nil
		}
	}
}

// resolveModel maps a model name or alias to the configured name.
func (s *Server) resolveModel(name string) (string, bool) {
	if _, ok := s.cfg.ModelTypes[name]; ok {
		return name, true
	}
	m, ok := s.cfg.Aliases[name]
	return m, ok
}

// servesRoute reports whether model's engine serves path: Config's
// ServesRoute when set, else every LLM (llama-server serves them all).
func (s *Server) servesRoute(model, path string) bool {
	if s.cfg.ServesRoute != nil {
		return s.cfg.ServesRoute(model, path)
	}
	return s.cfg.ModelTypes[model] == engine.KindLLM
}

// routeModel resolves name and checks that its engine serves path.
func (s *Server) routeModel(name, path string) (string, error) {
	if name == "" {
		return "", fieldErr("model", "required: the name of a configured model (GET /v1/models lists them)")
	}
	model, ok := s.resolveModel(name)
	if !ok {
		e := s.unknownModel(name)
		e.Param = "model"
		return "", e
	}
	if !s.servesRoute(model, path) {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeWrongModel, Param: "model",
			Message: fmt.Sprintf("model: %q does not serve %s (its engine has no such route)", model, path)}
	}
	return model, nil
}
