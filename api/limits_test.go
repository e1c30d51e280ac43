package api_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
)

// serveLimited serves b's handler over TCP through api.LimitListener.
func serveLimited(t *testing.T, b *testBundle, maxConns int, maxHeader int) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(b.handler)
	ts.Listener = api.LimitListener(ts.Listener, maxConns)
	ts.Config.MaxHeaderBytes = maxHeader
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// rawRequest writes head (and body) on a new connection.
func rawRequest(t *testing.T, addr, head, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+body); err != nil {
		t.Fatal(err)
	}
	return c
}

// readAnswer reads one response within 10 s and its body.
func readAnswer(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The server closes the connection after these answers.
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("connection still open after the answer: %d %v", n, err)
	}
	return resp, b
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func postHead(length int) string {
	return fmt.Sprintf("POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", length)
}

// A client that declares a body and stops sending is answered 408 and
// disconnected once the body has been idle for BodyIdleTimeout, instead of
// holding a goroutine, a connection and (before) a buffer of the declared
// size forever.
func TestLimits_StalledBodyIsClosed(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.BodyIdleTimeout = 300 * time.Millisecond }})
	addr := serveLimited(t, b, 16, 0)
	c := rawRequest(t, addr, postHead(1<<20), "{")
	resp, body := readAnswer(t, c)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"body_timeout"`) ||
		!strings.Contains(string(body), "server.body_idle_timeout_seconds") {
		t.Fatalf("stalled body: %d %s", resp.StatusCode, body)
	}
	if n := b.queuedJobs(t); n != 0 {
		t.Fatalf("%d jobs queued", n)
	}
}

// A slow body that keeps coming is not cut off: the timeout is per read.
func TestLimits_SlowSteadyBodyIsRead(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.BodyIdleTimeout = 500 * time.Millisecond }})
	addr := serveLimited(t, b, 16, 0)
	job := `{"model":"llama","prompt":"hi"}` + strings.Repeat(" ", 39)
	c := rawRequest(t, addr, postHead(len(job)), "")
	for i := range len(job) { // 70 bytes, 25 ms apart: longer in all than the timeout
		if _, err := io.WriteString(c, job[i:i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond) // the client's pace, not synchronisation
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("slow body: %v %v", resp, err)
	}
}

// The bytes of all bodies being read are bounded: one more body past
// MaxInflightBodyBytes gets 503, and the budget comes back when a request
// ends.
func TestLimits_InflightBodyBytes(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) {
		c.MaxInflightBodyBytes = 1000
		c.BodyIdleTimeout = time.Minute
	}})
	addr := serveLimited(t, b, 16, 0)
	// 900 bytes of a 2000-byte body held by a stalled client.
	held := rawRequest(t, addr, postHead(2000), `{"model":"llama","prompt":"`+strings.Repeat("x", 873))
	job := `{"model":"llama","prompt":"hi"}` + strings.Repeat(" ", 170)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Post("http://"+addr+"/jobs", "application/json", strings.NewReader(job))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			if !strings.Contains(string(body), `"server_busy"`) || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("over budget: %s Retry-After %q", body, resp.Header.Get("Retry-After"))
			}
			break
		}
		if resp.StatusCode != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("with 900 of 1000 bytes held: %d %s", resp.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond) // until the server has read the held bytes
	}
	held.Close()
	for {
		resp, err := http.Post("http://"+addr+"/jobs", "application/json", strings.NewReader(job))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget not given back: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLimitListener_BoundsOpenConnections(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := api.LimitListener(inner, 2)
	defer ln.Close()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String()) // the kernel's backlog holds the third
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	second, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	third := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			third <- c
		}
		close(third)
	}()
	select {
	case <-third:
		t.Fatal("a third connection accepted while two are open")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close gives back nothing more
	if c, ok := <-third; !ok {
		t.Fatal("Accept failed after a slot was freed")
	} else {
		c.Close()
	}
	// Close ends a waiting Accept (no connection is pending, so it waits).
	errCh := make(chan error, 1)
	go func() { _, err := ln.Accept(); errCh <- err }()
	ln.Close()
	if err := <-errCh; err == nil {
		t.Fatal("Accept after Close succeeded")
	}
	_ = clients
}

// net/http answers requests it cannot read with plain text of its own; the
// listener's connections turn them into JSON errors that fit both doors'
// shapes.
func TestLimitListener_NetHTTPErrorsAreJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	addr := serveLimited(t, b, 16, 1024)
	for _, tt := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"HeadersTooLarge", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431, api.CodeHeadersTooLarge},
		{"MalformedHeader", "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n", 400, api.CodeBadRequest},
		{"UnknownTransferEncoding", "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, api.CodeInternal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := readAnswer(t, rawRequest(t, addr, tt.req, ""))
			if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			var e struct {
				Error map[string]any `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if e.Error["code"] != tt.code || e.Error["message"] == "" || e.Error["type"] == nil {
				t.Fatalf("error %v", e.Error)
			}
			if p, ok := e.Error["param"]; !ok || p != nil {
				t.Fatalf("param %v, want null (OpenAI shape)", p)
			}
		})
	}
	// Answers of handlers pass unchanged, connections are reused.
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %d", resp.StatusCode)
	}
}

// An upload goes to disk as it arrives, so it holds no share of
// MaxInflightBodyBytes: a file larger than the whole budget is stored. One
// that stalls gets 408 body_timeout in OpenAI's shape, not 500.
func TestLimits_UploadsStreamToDisk(t *testing.T) {
	t.Parallel()
	b := setupBatches(t, 1<<20, func(c *api.Config) {
		c.MaxInflightBodyBytes = 1000
		c.BodyIdleTimeout = 300 * time.Millisecond
	})
	line := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"llama","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	if rec := upload(t, b, strings.Repeat(line, 40), "batch"); rec.Code != http.StatusOK {
		t.Fatalf("upload of %d bytes against a 1000-byte budget: %d %s", 40*len(line), rec.Code, rec.Body)
	}
	addr := serveLimited(t, b, 16, 0)
	const boundary = "xyz"
	part := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n" + line
	head := fmt.Sprintf("POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n",
		boundary, 1<<19)
	resp, body := readAnswer(t, rawRequest(t, addr, head, part))
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"code":"body_timeout"`) ||
		!strings.Contains(string(body), `"type":"invalid_request_error"`) {
		t.Fatalf("stalled upload: %d %s", resp.StatusCode, body)
	}
}
