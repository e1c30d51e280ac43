package api_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/api/logring"
)

func TestLogs_DaemonStream(t *testing.T) {
	t.Parallel()
	ring := logring.New(10)
	for _, l := range []string{"one", "two", "three"} {
		ring.Add(l)
	}
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.Logs = ring }})
	rec := b.do(t, http.MethodGet, "/logs/stream?follow=false&tail=2", "")
	if rec.Code != 200 || rec.Body.String() != "two\nthree\n" || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("recent lines: %d %q", rec.Code, rec.Body)
	}
	wantError(t, b.do(t, http.MethodGet, "/logs/stream?tail=x", ""), http.StatusBadRequest, "invalid", "tail")

	srv := httptest.NewServer(b.handler)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/logs/stream?tail=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The answer's header comes after the follower is made: a line added
	// now is sent.
	ring.Add("four")
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "four\n" {
		t.Fatalf("followed line %q, %v", line, err)
	}
}

func TestLogs_EngineStreamErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wantError(t, b.do(t, http.MethodGet, "/logs/stream/nope", ""), http.StatusNotFound, "unknown_model")
	// The fake scheduler cannot follow engine output.
	wantError(t, b.do(t, http.MethodGet, "/logs/stream/llama", ""), http.StatusNotImplemented, "internal")
}
