package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	ctx  context.Context
}

func dialWS(t *testing.T, ts *httptest.Server) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return &wsClient{t: t, conn: conn, ctx: ctx}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.conn.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// wsMsg is any server message.
type wsMsg struct {
	streamMsg
	ID             string           `json:"id"`
	PreviousStatus string           `json:"previous_status"`
	Code           string           `json:"code"`
	Message        string           `json:"message"`
	Event          *scheduler.Event `json:"event"`
}

func (c *wsClient) next() wsMsg {
	c.t.Helper()
	_, b, err := c.conn.Read(c.ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("message %s: %v", b, err)
	}
	return m
}

// sync sends a ping and reads up to its pong: every earlier request has
// been handled. It returns the messages read before the pong.
func (c *wsClient) sync() []wsMsg {
	c.t.Helper()
	c.send(map[string]string{"type": "ping", "id": "sync"})
	var before []wsMsg
	for {
		m := c.next()
		if m.Type == "pong" && m.ID == "sync" {
			return before
		}
		before = append(before, m)
	}
}

func setupWS(t *testing.T) (*testBundle, *wsClient) {
	t.Helper()
	b, ts, _ := setupStream(t)
	return b, dialWS(t, ts)
}

func TestWS_SubmitStreamsTheJob(t *testing.T) {
	t.Parallel()
	b, c := setupWS(t)
	c.send(map[string]any{"type": "submit", "id": "r1", "model": "llama", "prompt": "hello", "params": map[string]any{"max_tokens": 8}, "stream": true})
	m := c.next()
	if m.Type != "submitted" || m.ID != "r1" || m.Status != "queued" || m.JobID == "" {
		t.Fatalf("reply %+v", m)
	}
	c.sync()
	if got := b.notifs.get(); len(got) != 1 || got[0] != "llama" {
		t.Fatalf("notifications %v", got)
	}
	j := b.claim(t, "llama")
	if j.ID != m.JobID || string(j.Params) != `{"max_tokens":8}` {
		t.Fatalf("claimed %+v", j)
	}
	b.progress(j.ID, 1, "echo:")
	b.progress(j.ID, 2, " hello")
	b.complete(t, j.ID, "echo: hello world")
	var text strings.Builder
	for {
		m := c.next()
		if m.JobID != j.ID {
			t.Fatalf("message %+v", m)
		}
		if m.Type == "done" {
			if m.Status != "completed" {
				t.Fatalf("done %+v", m)
			}
			break
		}
		text.WriteString(m.Text)
	}
	if text.String() != "echo: hello world" {
		t.Fatalf("text %q", text.String())
	}
}

func TestWS_StreamAndCancel(t *testing.T) {
	t.Parallel()
	b, c := setupWS(t)
	j := b.enqueue(t, "llama")
	c.send(map[string]any{"type": "stream", "id": "s", "job_id": j.ID})
	c.send(map[string]any{"type": "cancel", "id": "c", "job_id": j.ID})
	var got []string
	for len(got) < 2 {
		m := c.next()
		switch m.Type {
		case "cancelled":
			if m.ID != "c" || m.PreviousStatus != "queued" {
				t.Fatalf("cancel reply %+v", m)
			}
		case "done":
			if m.Status != "cancelled" {
				t.Fatalf("done %+v", m)
			}
		default:
			t.Fatalf("message %+v", m)
		}
		got = append(got, m.Type)
	}
	if st, _ := b.store.Get(j.ID); st.State != store.JobStateCancelled {
		t.Fatalf("job %s", st.State)
	}
	c.send(map[string]any{"type": "cancel", "id": "again", "job_id": j.ID})
	if m := c.next(); m.Type != "error" || m.Code != "already_finished" || m.ID != "again" {
		t.Fatalf("second cancel %+v", m)
	}
}

func TestWS_SystemEvents(t *testing.T) {
	t.Parallel()
	b, c := setupWS(t)
	c.send(map[string]any{"type": "subscribe", "id": "e"})
	if m := c.next(); m.Type != "subscribed" || m.ID != "e" {
		t.Fatalf("reply %+v", m)
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "qwen"})
	if m := c.next(); m.Type != "event" || m.Event == nil || m.Event.Type != "model_ready" || m.Event.Model != "qwen" || m.Event.Seq == 0 {
		t.Fatalf("event %+v", m)
	}
	c.send(map[string]any{"type": "unsubscribe"})
	for _, m := range c.sync() {
		if m.Type != "unsubscribed" && m.Type != "event" {
			t.Fatalf("message %+v", m)
		}
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "llama"})
	if ms := c.sync(); len(ms) != 0 {
		t.Fatalf("events after unsubscribe: %+v", ms)
	}
}

func TestWS_BadRequestsKeepTheConnection(t *testing.T) {
	t.Parallel()
	_, c := setupWS(t)
	tests := []struct {
		msg  string
		code string
		part string
	}{
		{`{"type":"submit","id":"1","model":"nope","prompt":"x"}`, "unknown_model", "nope"},
		{`{"type":"submit","id":"2","model":"llama"}`, "invalid", "prompt"},
		{`{"type":"submit","id":"3","model":"llama","prompt":"x","params":{"temperature":9}}`, "invalid", "params.temperature"},
		{`{"type":"stream","id":"4","job_id":"nosuchjob0000000000"}`, "not_found", "no job"},
		{`{"type":"dance","id":"5"}`, "invalid", "type"},
		{`{"type":"ping","color":"red"}`, "invalid", "color"},
		{`not json`, "invalid_json", "malformed"},
	}
	for _, tt := range tests {
		if err := c.conn.Write(c.ctx, websocket.MessageText, []byte(tt.msg)); err != nil {
			t.Fatal(err)
		}
		m := c.next()
		if m.Type != "error" || m.Code != tt.code || !strings.Contains(m.Message, tt.part) {
			t.Errorf("%s: reply %+v, want error %s naming %s", tt.msg, m, tt.code, tt.part)
		}
	}
	if err := c.conn.Write(c.ctx, websocket.MessageBinary, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if m := c.next(); m.Type != "error" || m.Code != "invalid_json" {
		t.Fatalf("binary message: %+v", m)
	}
	c.sync()
}

func TestWS_PlainGETIsRefused(t *testing.T) {
	t.Parallel()
	b, _, _ := setupStream(t)
	wantError(t, b.do(t, http.MethodGet, "/ws", ""), http.StatusUpgradeRequired, "invalid", "WebSocket")
}

func TestWS_ServerCloseEndsTheConnection(t *testing.T) {
	t.Parallel()
	b, c := setupWS(t)
	j := b.enqueue(t, "llama")
	c.send(map[string]any{"type": "stream", "job_id": j.ID})
	c.send(map[string]any{"type": "subscribe"})
	c.sync()
	b.server.Close()
	for {
		_, _, err := c.conn.Read(c.ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway && !errors.Is(err, context.Canceled) {
				t.Fatalf("close: %v", err)
			}
			return
		}
	}
}
