package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
)

// eventsBuffer is each /events subscriber's buffer.
const eventsBuffer = 256

// subscribeEvents subscribes to the bus for GET /events and returns the
// recent events the client asked to see again: those after the
// Last-Event-ID header (an EventSource reconnecting) or the since query
// parameter (?since=0: everything the server keeps; a reloaded dashboard).
// Neither given: no replay. Returns an invalid-request error for a value
// that is not a sequence number.
func (s *Server) subscribeEvents(c echo.Context) (*scheduler.Subscription, []scheduler.Event, error) {
	since, ok, err := replayFrom(c.Request())
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return s.sched.Bus().Subscribe(eventsBuffer), nil, nil
	}
	sub, replay := s.sched.Bus().SubscribeSince(eventsBuffer, since)
	return sub, replay, nil
}

// replayFrom reads the sequence number to replay after: Last-Event-ID
// first, then ?since=.
func replayFrom(r *http.Request) (since uint64, ok bool, err error) {
	v, name := strings.TrimSpace(r.Header.Get("Last-Event-ID")), "Last-Event-ID"
	if v == "" {
		v, name = strings.TrimSpace(r.URL.Query().Get("since")), "since"
	}
	if v == "" {
		return 0, false, nil
	}
	n, perr := strconv.ParseUint(v, 10, 64)
	if perr != nil {
		return 0, false, apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("%s must be an event id (a whole number), got %q", name, v))
	}
	return n, true, nil
}

// writeEvent writes one event in the text/event-stream format.
func writeEvent(w io.Writer, ev scheduler.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event %d: %w", ev.Seq, err)
	}
	_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, b)
	return err
}

// writeReplay writes the replayed events; false when the client is gone.
func writeReplay(w io.Writer, evs []scheduler.Event) bool {
	for _, ev := range evs {
		if writeEvent(w, ev) != nil {
			return false
		}
	}
	return true
}
