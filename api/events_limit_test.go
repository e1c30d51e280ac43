package api_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
)

// subscribeRaw subscribes to /events over a connection of its own and
// returns once ": connected" arrived.
func subscribeRaw(t *testing.T, addr string) (net.Conn, *http.Response) {
	t.Helper()
	c := rawRequest(t, addr, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	line, err := bufio.NewReaderSize(resp.Body, 16).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ": connected") {
		t.Fatalf("first line %q: %v", line, err)
	}
	return c, resp
}

// A subscriber that stops reading is dropped, whichever comes first: its
// subscription overflows (the stream ends), or a write stalls for the
// write timeout (the connection closes). Before, its handler waited on the
// full socket for ever, holding its buffers.
func TestEvents_ClientThatDoesNotReadIsDropped(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		events int // more than the subscription holds: it overflows
		size   int
	}{
		{"Overflow", 1024, 1 << 10},
		{"StalledWrite", 200, 256 << 10}, // 50 MiB: beyond the socket buffers
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupWith(t, setupOpts{server: func(s *api.Server) { api.SetEventWriteTimeout(s, 200*time.Millisecond) }})
			addr := serveLimited(t, b, 16, 0)
			c, resp := subscribeRaw(t, addr)
			// The client reads nothing more while the events are published.
			chunk := strings.Repeat("z", tt.size)
			for range tt.events {
				b.bus.Publish(scheduler.Event{Type: scheduler.EvJobProgress, JobID: "j", Chunk: chunk})
			}
			deadline := time.Now().Add(10 * time.Second)
			for api.EventClients(b.server) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the subscriber that does not read is still served")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Then it reads: what was sent, then the end of the stream
			// or of the connection, never a wait.
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := io.Copy(io.Discard, resp.Body)
			if isTimeout(err) {
				t.Fatalf("stream still open after %d bytes: %v", n, err)
			}
			if n >= int64(tt.events*tt.size) {
				t.Fatalf("a client that did not keep up got all %d bytes", n)
			}
		})
	}
}

// The number of event streams is bounded; beyond it, 429 in JSON.
func TestEvents_MaxClients(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.MaxEventClients = 2 }})
	addr := serveLimited(t, b, 16, 0)
	open := func() (*http.Response, func()) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, func() { resp.Body.Close() }
	}
	r1, close1 := open()
	defer close1()
	r2, close2 := open()
	defer close2()
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("streams: %d %d", r1.StatusCode, r2.StatusCode)
	}
	r3, close3 := open()
	body, _ := io.ReadAll(r3.Body)
	close3()
	if r3.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"too_many_clients"`) ||
		!strings.Contains(string(body), "server.max_event_clients") || r3.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %d %s", r3.StatusCode, body)
	}
	// A stream that ends frees its place.
	close1()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, done := open()
		done()
		if r.StatusCode == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(errors.New("no place freed by a closed stream"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Job streams (SSE and WebSocket) are bounded server-wide at
// 4 × MaxEventClients, each holding a bus subscription; a WebSocket's
// event subscription counts as an event client. Past the bounds: 429 JSON
// with Retry-After (SSE), an error message (WebSocket); a stream that ends
// frees its place.
func TestStreams_ServerWideBound(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.MaxEventClients = 1 }})
	addr := serveLimited(t, b, 64, 0)
	job := b.enqueue(t, "llama") // stays queued: its streams stay open
	open := func() *http.Response {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/jobs/" + job.ID + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	var streams []*http.Response
	for range 3 {
		if r := open(); r.StatusCode != 200 {
			t.Fatalf("stream: %d", r.StatusCode)
		} else {
			streams = append(streams, r)
		}
	}
	ws := dialWS(t, &httptest.Server{URL: "http://" + addr})
	ws.send(map[string]any{"type": "stream", "id": "s1", "job_id": job.ID}) // the 4th: allowed
	ws.send(map[string]any{"type": "stream", "id": "s2", "job_id": job.ID}) // the 5th: refused
	for {
		m := ws.next()
		if m.ID == "s2" {
			if m.Type != "error" || !strings.Contains(m.Message, "too many job streams") {
				t.Fatalf("5th stream over the WebSocket: %+v", m)
			}
			break
		}
	}
	r := open()
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"too_many_clients"`) || r.Header.Get("Retry-After") == "" {
		t.Fatalf("5th stream over SSE: %d %s", r.StatusCode, body)
	}
	// The one event client allowed, then none.
	ws.send(map[string]any{"type": "subscribe", "id": "e1"})
	other := dialWS(t, &httptest.Server{URL: "http://" + addr})
	other.send(map[string]any{"type": "subscribe", "id": "e2"})
	if m := other.next(); m.Type != "error" || !strings.Contains(m.Message, "server.max_event_clients") {
		t.Fatalf("second event subscription: %+v", m)
	}
	streams[0].Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r := open(); r.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no place freed by a closed stream")
		}
	}
}
