package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// door is the protocol a request came through; its errors take that
// protocol's shape.
type door int

const (
	doorNative    door = iota // VramCram's own routes: {"error":{"code","message"}}
	doorOpenAI                // /v1/…, llama-server's routes, /upstream/…
	doorAnthropic             // /v1/messages…: {"type":"error","error":{"type","message"}}
	doorOllama                // /api/…: {"error":"message"}
)

// doorOf is the door of a request path.
func doorOf(path string) door {
	switch {
	case strings.HasPrefix(path, "/v1/messages"):
		return doorAnthropic
	case strings.HasPrefix(path, "/api/"):
		return doorOllama
	case isOpenAIPath(path), isPassPath(path), strings.HasPrefix(path, "/upstream/"):
		return doorOpenAI
	}
	return doorNative
}

// writeDoorError writes ae in the shape of the request's door and reports
// whether it did (false: the native shape is the caller's to write).
func writeDoorError(c echo.Context, ae *Error) bool {
	switch doorOf(c.Request().URL.Path) {
	case doorOpenAI:
		writeOpenAIError(c, ae)
	case doorAnthropic:
		_ = c.JSON(ae.Status, anthropicErrorBody(ae))
	case doorOllama:
		_ = c.JSON(ae.Status, map[string]string{"error": ae.Message})
	default:
		return false
	}
	return true
}

// anthropicErrorBody is Anthropic's error shape.
func anthropicErrorBody(ae *Error) map[string]any {
	return map[string]any{"type": "error", "error": map[string]string{"type": anthropicType(ae.Status), "message": ae.Message}}
}

// anthropicType is Anthropic's error type for an HTTP status.
func anthropicType(status int) string { return errorType(doorAnthropic, status) }

// errorType names an HTTP status in the error vocabulary of OpenAI's or
// Anthropic's API; they agree but for 413, 503 and other 5xx.
func errorType(d door, status int) string {
	anthropic := d == doorAnthropic
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case anthropic && status == http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case anthropic && status == http.StatusServiceUnavailable:
		return "overloaded_error"
	case anthropic && status >= 500:
		return "api_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

// writeAnthropicStreamError ends an open Anthropic event stream with an
// error event, as llama-server does.
func writeAnthropicStreamError(c echo.Context, ae *Error) {
	b, _ := json.Marshal(anthropicErrorBody(ae))
	_, _ = fmt.Fprintf(c.Response(), "event: error\ndata: %s\n\n", b)
	_ = http.NewResponseController(c.Response().Writer).Flush()
}
