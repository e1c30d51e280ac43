package runner

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// closingServer answers the first request of its first connection and then
// closes that connection when the next request arrives on it, without a
// byte of answer: the race of a keep-alive connection the engine closes
// (idle timeout, max requests) as the client reuses it. Later connections
// are answered normally.
func closingServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveConn(c, n == 0)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func serveConn(c net.Conn, dropSecond bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		if dropSecond && i == 1 {
			return // closed with the request unanswered
		}
		answer := fmt.Sprintf("conn answer %d: %s", i, body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
	}
}

func TestReuseRetry(t *testing.T) {
	t.Parallel()
	post := func(c *http.Client, url, body string) (string, error) {
		resp, err := c.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	t.Run("Retried", func(t *testing.T) {
		t.Parallel()
		url := closingServer(t)
		tr := newTransport()
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: &reuseRetry{base: tr}}
		if got, err := post(c, url, "one"); err != nil || got != "conn answer 0: one" {
			t.Fatalf("first: %q %v", got, err)
		}
		// Reuses the connection the server drops: sent again on a new one.
		if got, err := post(c, url, "two"); err != nil || got != "conn answer 0: two" {
			t.Fatalf("second: %q %v", got, err)
		}
	})
	t.Run("PlainTransportFails", func(t *testing.T) {
		t.Parallel()
		url := closingServer(t)
		tr := newTransport()
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr}
		if _, err := post(c, url, "one"); err != nil {
			t.Fatal(err)
		}
		if _, err := post(c, url, "two"); err == nil {
			t.Fatal("a POST on the dropped connection succeeded without the retry: the test does not provoke the race")
		}
	})
	t.Run("IdleBelowEngineKeepAlive", func(t *testing.T) {
		t.Parallel()
		if tr := newTransport(); tr.IdleConnTimeout <= 0 || tr.IdleConnTimeout >= 5e9 {
			t.Fatalf("IdleConnTimeout %s; want below llama-server's 5 s keep-alive", tr.IdleConnTimeout)
		}
	})
}
