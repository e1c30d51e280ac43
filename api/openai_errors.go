package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// Error codes of the OpenAI-compatible routes, besides the stable codes of
// errors.go (which they use too).
const (
	CodeModelNotFound = "model_not_found" // OpenAI's code for an unknown model
	CodeWrongModel    = "model_not_supported"
	CodeLoadFailed    = "model_load_failed" // the model failed to load max_attempts times
	CodeEngineFailed  = "engine_failed"     // the engine could not be reached or died mid-answer
	CodeNotAvailable  = "not_available"     // this build's scheduler serves no interactive requests
)

// openAIErrorBody is the error shape OpenAI clients parse:
// {"error":{"message","type","param","code"}}.
type openAIErrorBody struct {
	Error openAIError `json:"error"`
}

type openAIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// isOpenAIPath reports whether errors on path use the OpenAI shape.
func isOpenAIPath(path string) bool { return strings.HasPrefix(path, "/v1/") }

// writeOpenAIError renders ae in the OpenAI shape. The code stays one of the
// stable codes, except that an unknown model is OpenAI's "model_not_found".
func writeOpenAIError(c echo.Context, ae *Error) {
	e := openAIError{Message: ae.Message, Type: openAIType(ae.Status), Code: ae.Code}
	if ae.Code == CodeUnknownModel {
		e.Code, e.Type = CodeModelNotFound, "invalid_request_error" // as OpenAI answers it
		if ae.Param == "" {
			ae.Param = "model"
		}
	}
	if ae.Param != "" {
		e.Param = &ae.Param
	}
	_ = c.JSON(ae.Status, openAIErrorBody{Error: e})
}

// openAIType is the OpenAI error type for an HTTP status.
func openAIType(status int) string { return errorType(doorOpenAI, status) }

// fieldErr is a 400 naming the request field at fault.
func fieldErr(param, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: param + ": " + msg, Param: param}
}

// acquireError maps an error of the scheduler's Acquire to an API error.
func acquireError(model string, err error) error {
	if errors.Is(err, scheduler.ErrLoadFailed) {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeLoadFailed,
			Message: fmt.Sprintf("model %q failed to load: %v", model, err), Param: "model"}
	}
	if errors.Is(err, store.ErrQueueFull) {
		// Requests waiting for a slot count against scheduling.max_queue
		// together with queued jobs.
		return &Error{Status: http.StatusTooManyRequests, Code: CodeQueueFull,
			Message: "too many jobs and requests waiting (scheduling.max_queue); retry later"}
	}
	if ae, ok := admitError(err).(*Error); ok {
		if ae.Code != CodeShuttingDown {
			ae.Param = "model"
		}
		return ae
	}
	return fmt.Errorf("acquire a slot of %s: %w", model, err)
}
