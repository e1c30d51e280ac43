package api_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
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
