package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// wsMaxStreams bounds the job streams one WebSocket follows at once.
const wsMaxStreams = 64

// wsRequest is a client message on /ws.
type wsRequest struct {
	Type     string          `json:"type"` // submit | stream | cancel | subscribe | unsubscribe | ping
	ID       string          `json:"id"`   // optional; echoed in the reply
	JobID    string          `json:"job_id"`
	Model    string          `json:"model"`
	Prompt   *string         `json:"prompt"`
	Params   json.RawMessage `json:"params"`
	Priority *int            `json:"priority"`
	Stream   bool            `json:"stream"` // submit: also stream the job
}

// wsReply answers a request. Job streams send streamMsg values; system
// events come as {"type":"event","event":{…}}.
type wsReply struct {
	Type           string           `json:"type"` // submitted | cancelled | subscribed | unsubscribed | pong | error | event
	ID             string           `json:"id,omitempty"`
	JobID          string           `json:"job_id,omitempty"`
	Status         string           `json:"status,omitempty"`
	PreviousStatus string           `json:"previous_status,omitempty"`
	Code           string           `json:"code,omitempty"`    // error: a stable code
	Message        string           `json:"message,omitempty"` // error: names the field
	Event          *scheduler.Event `json:"event,omitempty"`
}

// ws handles GET /ws: one WebSocket carrying job submission, job streams,
// cancellation and the system events as JSON text messages.
func (s *Server) ws(c echo.Context) error {
	if !strings.EqualFold(c.Request().Header.Get("Upgrade"), "websocket") {
		return apiErr(http.StatusUpgradeRequired, CodeInvalid, "GET /ws needs a WebSocket handshake (Upgrade: websocket)")
	}
	conn, err := websocket.Accept(c.Response(), c.Request(), nil)
	if err != nil {
		return nil // Accept has answered the bad handshake
	}
	conn.SetReadLimit(s.cfg.MaxBodyBytes)
	ctx, cancel := context.WithCancel(c.Request().Context())
	ss := &wsSession{s: s, conn: conn, ctx: ctx, streams: make(chan struct{}, wsMaxStreams)}
	ss.wg.Add(1)
	go func() { // ends the session when the server closes
		defer ss.wg.Done()
		select {
		case <-s.closing:
			_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
		case <-ctx.Done():
		}
	}()
	ss.readLoop()
	cancel()
	ss.wg.Wait()
	_ = conn.CloseNow()
	return nil
}

// wsSession is one WebSocket connection. The read loop owns events; every
// goroutine may write (Conn.Write is safe for concurrent use).
type wsSession struct {
	s       *Server
	conn    *websocket.Conn
	ctx     context.Context // ends when the connection does
	wg      sync.WaitGroup  // the session's goroutines
	streams chan struct{}   // a token per running job stream
	events  context.CancelFunc
}

func (ss *wsSession) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ss.conn.Write(ss.ctx, websocket.MessageText, b)
}

func (ss *wsSession) fail(id string, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ss.s.log.Error("websocket request failed", "err", err)
		ae = apiErr(http.StatusInternalServerError, CodeInternal, "internal error; see the server log")
	}
	_ = ss.send(wsReply{Type: "error", ID: id, Code: ae.Code, Message: ae.Message})
}

// readLoop handles client messages until the connection ends.
func (ss *wsSession) readLoop() {
	for {
		typ, data, err := ss.conn.Read(ss.ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			ss.fail("", apiErr(http.StatusBadRequest, CodeInvalidJSON, "messages must be JSON text"))
			continue
		}
		var req wsRequest
		if err := decodeJSON(data, &req, true); err != nil {
			ss.fail("", err)
			continue
		}
		ss.handle(req)
	}
}

func (ss *wsSession) handle(req wsRequest) {
	switch req.Type {
	case "submit":
		ss.submit(req)
	case "stream":
		ss.stream(req.ID, req.JobID)
	case "cancel":
		prev, err := ss.s.cancel(ss.ctx, req.JobID)
		if err != nil {
			ss.fail(req.ID, err)
			return
		}
		_ = ss.send(wsReply{Type: "cancelled", ID: req.ID, JobID: req.JobID, Status: string(store.JobStateCancelled), PreviousStatus: string(prev)})
	case "subscribe":
		ss.subscribe(req.ID)
	case "unsubscribe":
		if ss.events != nil {
			ss.events()
			ss.events = nil
		}
		_ = ss.send(wsReply{Type: "unsubscribed", ID: req.ID})
	case "ping":
		_ = ss.send(wsReply{Type: "pong", ID: req.ID})
	default:
		ss.fail(req.ID, apiErr(http.StatusBadRequest, CodeInvalid,
			"type: must be one of submit, stream, cancel, subscribe, unsubscribe, ping"))
	}
}

func (ss *wsSession) submit(req wsRequest) {
	job, err := ss.s.enqueue(ss.ctx, submitRequest{Model: req.Model, Prompt: req.Prompt, Params: req.Params, Priority: req.Priority})
	if err != nil {
		ss.fail(req.ID, err)
		return
	}
	_ = ss.send(wsReply{Type: "submitted", ID: req.ID, JobID: job.ID, Status: string(store.JobStateQueued)})
	if req.Stream {
		ss.stream(req.ID, job.ID)
	}
}

// stream follows a job in a goroutine of its own, sending its messages.
func (ss *wsSession) stream(id, jobID string) {
	select {
	case ss.streams <- struct{}{}:
	default:
		ss.fail(id, apiErr(http.StatusTooManyRequests, CodeInvalid, "job_id: too many job streams on this connection"))
		return
	}
	if err := ss.s.takeJobStream(); err != nil {
		<-ss.streams
		ss.fail(id, err)
		return
	}
	release := func() {
		ss.s.jobStreams.Add(-1)
		<-ss.streams
	}
	sub := ss.s.sched.Bus().Subscribe(streamBuffer) // before reading the job
	j, err := ss.s.jobByID(jobID)
	if err != nil {
		sub.Close()
		release()
		ss.fail(id, err)
		return
	}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		defer release()
		defer sub.Close()
		_ = ss.s.follow(ss.ctx, sub, j, func(m streamMsg) error { return ss.send(m) }, nil)
	}()
}

// subscribe forwards every bus event until unsubscribe. A connection that
// reads too slowly loses events rather than slowing the scheduler.
func (ss *wsSession) subscribe(id string) {
	if ss.events != nil {
		_ = ss.send(wsReply{Type: "subscribed", ID: id})
		return
	}
	if err := ss.s.takeEventClient(); err != nil {
		ss.fail(id, err)
		return
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	ss.events = cancel
	sub := ss.s.sched.Bus().Subscribe(256)
	_ = ss.send(wsReply{Type: "subscribed", ID: id}) // before the first event
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		defer ss.s.eventClients.Add(-1)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-sub.C:
				if !ok || ss.send(wsReply{Type: "event", Event: &ev}) != nil {
					return
				}
			}
		}
	}()
}
