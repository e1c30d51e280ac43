package api

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Defaults of the request-body limits (Config fields of the same names).
const (
	defaultBodyIdleTimeout      = 30 * time.Second
	defaultMaxInflightBodyBytes = 256 << 20
)

// CodeBusy answers a request whose body would take the server past
// server.max_inflight_body_mb; CodeBodyTimeout one whose body stalled for
// server.body_idle_timeout_seconds.
const (
	CodeBusy        = "server_busy"
	CodeBodyTimeout = "body_timeout"
)

// errBodyBudget is returned by a request body's Read when the bytes of all
// bodies being read would exceed Config.MaxInflightBodyBytes.
var errBodyBudget = errors.New("in-flight request bodies exceed server.max_inflight_body_mb")

// byteBudget counts the body bytes the server holds for requests being
// handled. Memory follows bytes that arrived, never a declared
// Content-Length (a client may declare 1 MiB and send one byte).
type byteBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes; false (nothing reserved) when that would pass max.
func (b *byteBudget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// guardedBody is a request body whose reads time out when the client sends
// nothing for idle, and whose bytes are charged to the server's budget until
// the handler returns.
type guardedBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	idle   time.Duration
	budget *byteBudget
	taken  int64 // bytes charged to budget; the handler's goroutine only
	ended  bool  // a read returned an error (EOF included)
	toDisk bool  // the handler copies the body to disk as it arrives
}

// streamToDisk stops charging r's body to the budget, and gives back what
// it was charged, for a handler that copies the body to disk as it reads
// it (a file upload): such a body holds only the copy's buffer, whatever
// its size. It does nothing to a body limitBodies did not wrap.
func streamToDisk(r *http.Request) {
	if b, ok := r.Body.(*guardedBody); ok {
		b.budget.give(b.taken)
		b.taken, b.toDisk = 0, true
	}
}

func (b *guardedBody) Read(p []byte) (int, error) {
	// A deadline per read: slow bodies are fine, stalled ones are not.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.ended = true
		// Past the body, net/http's background read watches for the client
		// going away: it must not time out while a long answer streams.
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	if n > 0 && !b.toDisk {
		if !b.budget.take(int64(n)) {
			return n, errBodyBudget
		}
		b.taken += int64(n)
	}
	return n, err
}

// finish gives the body's bytes back. A body the handler left unread gets
// a deadline so that net/http's discard of its rest cannot hang.
func (b *guardedBody) finish() {
	b.budget.give(b.taken)
	b.taken = 0
	if !b.ended {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
}

// limitBodies wraps next so that every request body is a guardedBody.
func (s *Server) limitBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		b := &guardedBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: s.cfg.BodyIdleTimeout, budget: s.bodies}
		defer b.finish()
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// bodyReadError maps an error of reading a request body to an API error;
// ok is false for errors that are not the limits' (the caller decides).
func (s *Server) bodyReadError(w http.ResponseWriter, err error) (*Error, bool) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return apiErr(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
			"request body exceeds "+strconv.FormatInt(s.cfg.MaxBodyBytes, 10)+" bytes (server.max_body_bytes)"), true
	case errors.Is(err, errBodyBudget):
		w.Header().Set("Retry-After", "1")
		return apiErr(http.StatusServiceUnavailable, CodeBusy,
			"the server is reading too many request bodies at once (server.max_inflight_body_mb); retry later"), true
	case isTimeout(err):
		w.Header().Set("Connection", "close")
		return apiErr(http.StatusRequestTimeout, CodeBodyTimeout,
			"request body: no data for "+s.cfg.BodyIdleTimeout.String()+" (server.body_idle_timeout_seconds)"), true
	}
	return nil, false
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// setLimitDefaults fills the limits Config leaves at zero.
func setLimitDefaults(cfg *Config) {
	if cfg.BodyIdleTimeout <= 0 {
		cfg.BodyIdleTimeout = defaultBodyIdleTimeout
	}
	if cfg.MaxInflightBodyBytes <= 0 {
		cfg.MaxInflightBodyBytes = defaultMaxInflightBodyBytes
	}
	if cfg.MaxEventClients <= 0 {
		cfg.MaxEventClients = defaultMaxEventClients
	}
}
