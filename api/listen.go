package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// DefaultMaxConnections is LimitListener's bound when none is given
// (server.max_connections).
const DefaultMaxConnections = 1024

// CodeHeadersTooLarge answers request headers beyond the server's
// MaxHeaderBytes; CodeBadRequest a request net/http could not parse.
const (
	CodeHeadersTooLarge = "headers_too_large"
	CodeBadRequest      = "bad_request"
)

// LimitListener wraps ln so that at most max connections are open at once:
// Accept waits while max are open (further clients wait in the kernel's
// backlog). Its connections also turn the plain-text errors that net/http
// writes itself into JSON (see jsonErrorConn).
func LimitListener(ln net.Listener, max int) net.Listener {
	if max <= 0 {
		max = DefaultMaxConnections
	}
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots chan struct{} // one token per open connection
	done  chan struct{} // closed by Close: a waiting Accept returns
	once  sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &jsonErrorConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// jsonErrorConn is an accepted connection that gives its slot back once
// closed, and rewrites net/http's own error answers into JSON.
//
// net/http answers a request it cannot read (headers beyond MaxHeaderBytes:
// 431; a malformed request line or header: 400; an unknown
// Transfer-Encoding: 501) before any handler runs, by writing a fixed
// plain-text response straight to the connection; no hook changes it. Those
// writes are recognisable: one Write of "HTTP/1.1 CODE TEXT" followed by
// exactly netHTTPErrorHeaders and a text body, which no handler's answer
// produces (net/http writes a Date and a Content-Length in those). The
// rewrite answers the same status with a JSON error. The request line was
// not read, so the door is unknown: the body is shaped to satisfy both
// error shapes ({"error":{"code","message"}} and OpenAI's
// {"error":{"message","type","param","code"}}).
type jsonErrorConn struct {
	net.Conn
	release func()
	once    sync.Once
}

// netHTTPErrorHeaders follows the status line of net/http's own error
// answers (server.go, errorHeaders).
const netHTTPErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if out, ok := jsonNetHTTPError(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite half-closes, as net/http does before it drops a connection
// whose request it did not read, so that the client gets the answer
// rather than a reset.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the TCP connection's sendfile path for bodies copied from
// files (images); only net/http's own error writes go through Write.
func (c *jsonErrorConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

func (c *jsonErrorConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// jsonNetHTTPError returns the JSON answer for p if p is one of net/http's
// plain-text error answers.
func jsonNetHTTPError(p []byte) ([]byte, bool) {
	const prefix = "HTTP/1.1 "
	if !bytes.HasPrefix(p, []byte(prefix)) || bytes.Count(p, []byte(netHTTPErrorHeaders)) != 1 {
		return nil, false
	}
	statusLine, text, _ := strings.Cut(string(p[len(prefix):]), netHTTPErrorHeaders)
	if strings.Contains(statusLine, "\r\n") || len(statusLine) < 3 {
		return nil, false
	}
	code, err := strconv.Atoi(statusLine[:3])
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	apiCode, msg := CodeBadRequest, text
	switch {
	case code == http.StatusRequestHeaderFieldsTooLarge:
		apiCode, msg = CodeHeadersTooLarge, "request headers too large"
	case code >= 500:
		apiCode = CodeInternal
	}
	e := openAIError{Message: msg, Type: openAIType(code), Code: apiCode}
	body, _ := json.Marshal(openAIErrorBody{Error: e})
	head := "HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n"
	return append([]byte(head), body...), true
}
