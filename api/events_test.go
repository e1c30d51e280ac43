package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/scheduler"
)

// sseEvent is one server-sent event as read off the wire.
type sseEvent struct {
	id, event, data string
}

// readEvent reads lines up to the next blank line; comment lines are skipped
// and an event of comments only is returned with empty fields.
func readEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event stream: %v (partial %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev
		}
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "id":
			ev.id = v
		case "event":
			ev.event = v
		case "data":
			ev.data = v
		}
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.handler.ServeHTTP(w, r)
		if r.URL.Path == "/events" {
			close(returned)
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, srv.URL+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
	r := bufio.NewReader(resp.Body)
	// The ": connected" comment comes after the subscription is made, so
	// events published from now on reach this stream.
	if ev := readEvent(t, r); ev != (sseEvent{}) {
		t.Fatalf("first event %+v, want the connected comment", ev)
	}

	id := b.submit(t, `{"model":"llama","prompt":"hello"}`)
	ev := readEvent(t, r)
	if ev.event != scheduler.EvJobQueued || ev.id == "" {
		t.Fatalf("event %+v", ev)
	}
	var data scheduler.Event
	if err := json.Unmarshal([]byte(ev.data), &data); err != nil {
		t.Fatalf("data %q: %v", ev.data, err)
	}
	if data.Type != scheduler.EvJobQueued || data.JobID != id || data.Model != "llama" || data.Time.IsZero() {
		t.Errorf("data %+v", data)
	}

	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "llama", Seconds: 0.25})
	if ev := readEvent(t, r); ev.event != scheduler.EvModelReady || !strings.Contains(ev.data, `"seconds":0.25`) {
		t.Errorf("event %+v", ev)
	}

	// The client goes away: the handler must return.
	stop()
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatal("events handler did not return after the client went away")
	}
}

func TestEvents_SlowClientDoesNotBlockPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := httptest.NewServer(b.handler)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	readEvent(t, r) // connected
	// Nobody reads: publishing far more than the buffer must not block.
	for range 5000 {
		b.bus.Publish(scheduler.Event{Type: scheduler.EvJobProgress, Chunk: strings.Repeat("x", 100)})
	}
	cancel()
	resp.Body.Close()
}

// openEvents opens GET path on srv and returns the stream's reader past the
// connected comment.
func openEvents(t *testing.T, ctx context.Context, url string, hdr ...string) (*bufio.Reader, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k := 0; k+1 < len(hdr); k += 2 {
		req.Header.Set(hdr[k], hdr[k+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if ev := readEvent(t, r); ev != (sseEvent{}) {
			t.Fatalf("first event %+v, want the connected comment", ev)
		}
	}
	return r, resp
}

func TestEvents_Replay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := httptest.NewServer(b.handler)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "llama"})           // 1
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelEvicted, Model: "llama"})         // 2
	b.bus.Publish(scheduler.Event{Type: scheduler.EvModelFailed, Model: "sd", Error: "x"}) // 3

	t.Run("SinceZero", func(t *testing.T) {
		r, _ := openEvents(t, ctx, srv.URL+"/events?since=0")
		for _, want := range []string{"1", "2", "3"} {
			if ev := readEvent(t, r); ev.id != want {
				t.Fatalf("replayed event %+v, want id %s", ev, want)
			}
		}
	})
	t.Run("LastEventID", func(t *testing.T) {
		r, _ := openEvents(t, ctx, srv.URL+"/events", "Last-Event-ID", "2")
		if ev := readEvent(t, r); ev.id != "3" || ev.event != scheduler.EvModelFailed {
			t.Fatalf("replayed event %+v, want only id 3", ev)
		}
		b.bus.Publish(scheduler.Event{Type: scheduler.EvModelReady, Model: "sd"})
		if ev := readEvent(t, r); ev.id != "4" {
			t.Fatalf("live event %+v, want id 4", ev)
		}
	})
	t.Run("NoReplayByDefault", func(t *testing.T) {
		r, _ := openEvents(t, ctx, srv.URL+"/events")
		b.bus.Publish(scheduler.Event{Type: scheduler.EvJobQueued, Model: "sd"})
		if ev := readEvent(t, r); ev.event != scheduler.EvJobQueued {
			t.Fatalf("first event %+v, want the live one", ev)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		rec := b.do(t, http.MethodGet, "/events?since=abc", "")
		wantError(t, rec, http.StatusBadRequest, "invalid", "since")
	})
}
