package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// events handles GET /events: the bus as server-sent events, after the
// recent ones asked for again (events_ring.go). A client that reads too
// slowly loses events rather than slowing the scheduler.
func (s *Server) events(c echo.Context) error {
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
	_, _ = fmt.Fprint(w, ": connected\n\n")
	if !writeReplay(w, replay) {
		return nil
	}
	w.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	ctx := c.Request().Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
		case ev, ok := <-sub.C:
			if !ok {
				return nil
			}
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, b); err != nil {
				return nil
			}
		}
		w.Flush()
	}
}
