package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/api/logring"
	"github.com/vramcram/vramcram/scheduler"
)

// EngineOutputs is the optional part of the scheduler that follows an
// engine's output; *scheduler.Scheduler implements it.
type EngineOutputs interface {
	EngineOutput(ctx context.Context, model string, buf int) (scheduler.EngineOutput, error)
}

// logsBuffer is each log follower's buffer, in lines.
const logsBuffer = 1024

// routeLogs adds GET /logs/stream (the daemon's log lines) and GET
// /logs/stream/{model} (the model's engine output).
func (s *Server) routeLogs(e *echo.Echo) {
	e.GET("/logs/stream", s.daemonLogs)
	e.GET("/logs/stream/:model", s.engineLogs)
}

// logsQuery is the query of both log routes: follow (default true) keeps
// the answer open for new lines; tail (default: all kept) limits the
// recent lines sent first.
func logsQuery(c echo.Context) (follow bool, tail int, err error) {
	follow, tail = true, -1
	if v := c.QueryParam("follow"); v != "" {
		if follow, err = strconv.ParseBool(v); err != nil {
			return false, 0, apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("follow must be true or false, got %q", v))
		}
	}
	if v := c.QueryParam("tail"); v != "" {
		if tail, err = strconv.Atoi(v); err != nil || tail < 0 {
			return false, 0, apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("tail must be a number of lines, got %q", v))
		}
	}
	return follow, tail, nil
}

// daemonLogs handles GET /logs/stream.
func (s *Server) daemonLogs(c echo.Context) error {
	follow, tail, err := logsQuery(c)
	if err != nil {
		return err
	}
	if s.cfg.Logs == nil {
		return apiErr(http.StatusNotImplemented, CodeInternal, "the daemon keeps no log lines")
	}
	recent, f := s.cfg.Logs.Follow(logsBuffer)
	defer f.Close()
	return s.streamLines(c, recent, tail, follow, f.C, nil)
}

// engineLogs handles GET /logs/stream/{model}: the recent output of the
// model's engine (the running one, else the last that ran), then its new
// lines until it exits.
func (s *Server) engineLogs(c echo.Context) error {
	follow, tail, err := logsQuery(c)
	if err != nil {
		return err
	}
	name, known := s.resolveModel(c.Param("model"))
	if !known {
		return s.unknownModel(c.Param("model"))
	}
	eo, ok := s.sched.(EngineOutputs)
	if !ok {
		return apiErr(http.StatusNotImplemented, CodeInternal, "engine output is not available")
	}
	out, err := eo.EngineOutput(c.Request().Context(), name, logsBuffer)
	switch {
	case errors.Is(err, scheduler.ErrNoOutput):
		return apiErr(http.StatusNotFound, CodeNotFound, err.Error())
	case err != nil:
		if ae, ok := admitError(err).(*Error); ok {
			return ae
		}
		return fmt.Errorf("engine output of %s: %w", name, err)
	}
	defer out.Stop()
	return s.streamLines(c, out.Recent, tail, follow, out.Lines, out.Done)
}

// streamLines answers text/plain: the last tail of recent (all when tail <
// 0), then, when follow, each line from lines as it comes until the client
// leaves, the server closes or done is closed.
func (s *Server) streamLines(c echo.Context, recent []string, tail int, follow bool, lines <-chan string, done <-chan struct{}) error {
	if tail >= 0 && tail < len(recent) {
		recent = recent[len(recent)-tail:]
	}
	w := c.Response()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	for _, l := range recent {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return nil
		}
	}
	w.Flush()
	if !follow {
		return nil
	}
	ctx := c.Request().Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		case <-done:
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			if _, err := io.WriteString(w, l+"\n"); err != nil {
				return nil
			}
			w.Flush()
		}
	}
}

// LogRing is the ring of the daemon's log lines that GET /logs/stream serves.
type LogRing = logring.Ring
