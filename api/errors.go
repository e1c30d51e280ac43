package api

import (
	"errors"
	"net/http"
	"syscall"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/store"
)

// Stable error codes.
const (
	CodeInvalid        = "invalid"           // a field is missing or wrong; message names it
	CodeInvalidJSON    = "invalid_json"      // the body is not JSON of the right shape
	CodeBodyTooLarge   = "body_too_large"    // the body exceeds server.max_body_bytes
	CodeUnknownModel   = "unknown_model"     // the model is not configured
	CodeUnavailable    = "model_unavailable" // binary or model file missing
	CodeTooLarge       = "model_too_large"   // the model needs more VRAM than the budget
	CodeQueueFull      = "queue_full"        // scheduling.max_queue reached; retry later
	CodeNotFound       = "not_found"
	CodeNotCompleted   = "not_completed" // result asked of an unfinished job
	CodeFinished       = "already_finished"
	CodeUnauthorized   = "unauthorized"
	CodeMethod         = "method_not_allowed"
	CodeShuttingDown   = "shutting_down"
	CodeInternal       = "internal"
	CodeUnsupportedMed = "unsupported_media_type"
	CodeStorageFull    = "storage_full"      // the disk holding the job store is full
	CodeStoreDown      = "store_unavailable" // the shared queue (Redis) cannot be reached; retry later
)

// Error is an API error: an HTTP status, a stable code and a message.
type Error struct {
	Status  int
	Code    string
	Message string
	// Extra fields merged into the top level of the body (e.g. "status").
	Extra map[string]any
	// Param names the request field at fault; shown only in the OpenAI
	// error shape of the /v1/ routes.
	Param string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// errorBody is the JSON shape of every error.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// handleError is echo's HTTPErrorHandler: it maps any error to the JSON shape.
// Internal errors are logged, not shown.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = fromEchoError(he)
	case errors.Is(err, store.ErrNoSpace), errors.Is(err, syscall.ENOSPC):
		s.log.Error("request failed: disk full", "method", c.Request().Method, "path", c.Path(), "err", err)
		ae = apiErr(http.StatusInsufficientStorage, CodeStorageFull,
			"no space left on the disk holding the job store or its files: free space in the server's storage.data_dir, then retry")
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("store unavailable", "method", c.Request().Method, "path", c.Path(), "err", err)
		c.Response().Header().Set("Retry-After", "5")
		ae = apiErr(http.StatusServiceUnavailable, CodeStoreDown, "the job store (storage.backend redis) cannot be reached; retry later (a submit answered so was not queued)")
	default:
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
		ae = apiErr(http.StatusInternalServerError, CodeInternal, "internal error; see the server log")
	}
	if ae.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="vramcram"`)
	}
	if ae.Code == CodeQueueFull && c.Response().Header().Get("Retry-After") == "" {
		c.Response().Header().Set("Retry-After", "5") // whichever door and check gave it
	}
	body := map[string]any{"error": map[string]string{"code": ae.Code, "message": ae.Message}}
	for k, v := range ae.Extra {
		body[k] = v
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if writeDoorError(c, ae) {
		return
	}
	_ = c.JSON(ae.Status, body)
}

func fromEchoError(he *echo.HTTPError) *Error {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok && m != "" {
		msg = m
	}
	switch he.Code {
	case http.StatusNotFound:
		return apiErr(he.Code, CodeNotFound, "no such route")
	case http.StatusMethodNotAllowed:
		return apiErr(he.Code, CodeMethod, "method not allowed on this route")
	case http.StatusRequestEntityTooLarge:
		return apiErr(he.Code, CodeBodyTooLarge, "request body too large")
	case http.StatusUnauthorized:
		return apiErr(he.Code, CodeUnauthorized, msg)
	case http.StatusUnsupportedMediaType:
		return apiErr(he.Code, CodeUnsupportedMed, msg)
	}
	if he.Code >= 500 {
		return apiErr(he.Code, CodeInternal, msg)
	}
	return apiErr(he.Code, CodeInvalid, msg)
}
