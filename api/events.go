package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
)

// Limits of the event stream.
const (
	defaultMaxEventClients = 256
	// defaultEventWriteTimeout bounds one event's write: a client whose
	// socket stays full that long is dropped.
	defaultEventWriteTimeout = 10 * time.Second
	// eventBuffer is each subscriber's queue of events not yet written.
	eventBuffer = 256
	// CodeTooManyClients answers /events beyond server.max_event_clients.
	CodeTooManyClients = "too_many_clients"
)

// events handles GET /events: the bus as server-sent events, after the
// recent ones asked for again (events_ring.go). A client that cannot keep
// up is dropped rather than buffered without bound: the stream ends when
// its subscription overflowed (it lost events; EventSource clients
// reconnect, with Last-Event-ID) or one write stalls for
// eventWriteTimeout. At most MaxEventClients streams are open at once.
func (s *Server) events(c echo.Context) error {
	if err := s.takeEventClient(); err != nil {
		c.Response().Header().Set("Retry-After", "5")
		return err
	}
	defer s.eventClients.Add(-1)
	sub, replay, err := s.subscribeEvents(c) // events_ring.go
	if err != nil {
		return err
	}
	defer sub.Close()
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := &eventWriter{w: w, rc: http.NewResponseController(w.Writer), timeout: s.eventWriteTimeout}
	defer func() { _ = out.rc.SetWriteDeadline(time.Time{}) }() // a kept-alive connection must not keep it
	if !out.send(": connected\n\n") {
		return nil
	}
	for _, ev := range replay {
		if !out.send(eventMessage(ev)) {
			return nil
		}
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	ctx := c.Request().Context()
	for {
		var msg string
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		case <-keep.C:
			msg = ": keep-alive\n\n"
		case ev, ok := <-sub.C:
			if !ok {
				return nil
			}
			msg = eventMessage(ev)
		}
		if !out.send(msg) || sub.Dropped() > 0 {
			return nil // too slow: the connection closes
		}
	}
}

func eventMessage(ev scheduler.Event) string {
	b, _ := json.Marshal(ev)
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, b)
}

// eventWriter writes and flushes one message at a time under a deadline.
type eventWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// send reports whether msg reached the connection in time.
func (e *eventWriter) send(msg string) bool {
	_ = e.rc.SetWriteDeadline(time.Now().Add(e.timeout))
	if _, err := fmt.Fprint(e.w, msg); err != nil {
		return false
	}
	return e.rc.Flush() == nil
}

// takeEventClient counts one more subscriber of every event (/events, and
// a WebSocket's subscribe): a 429 error when MaxEventClients are open. The
// caller gives it back with s.eventClients.Add(-1).
func (s *Server) takeEventClient() error {
	if n := s.eventClients.Add(1); n > int64(s.cfg.MaxEventClients) {
		s.eventClients.Add(-1)
		return apiErr(http.StatusTooManyRequests, CodeTooManyClients,
			"too many event streams open ("+strconv.Itoa(s.cfg.MaxEventClients)+", server.max_event_clients); retry later")
	}
	return nil
}

// jobStreamsPerEventClient sizes the server-wide bound on job streams
// (GET /jobs/{id}/stream and WebSocket streams): each holds a bus
// subscription of streamBuffer events, and every event is offered to every
// subscription.
const jobStreamsPerEventClient = 4

// takeJobStream counts one more job stream: a 429 error when
// jobStreamsPerEventClient × MaxEventClients are open. The caller gives it
// back with s.jobStreams.Add(-1).
func (s *Server) takeJobStream() error {
	limit := int64(jobStreamsPerEventClient * s.cfg.MaxEventClients)
	if n := s.jobStreams.Add(1); n > limit {
		s.jobStreams.Add(-1)
		return apiErr(http.StatusTooManyRequests, CodeTooManyClients, fmt.Sprintf(
			"too many job streams open (%d: %d × server.max_event_clients); retry later, or poll GET /jobs/{id}", limit, jobStreamsPerEventClient))
	}
	return nil
}
