package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/store"
)

// browserReq sends one request with an explicit Host and header pairs.
func (b *testBundle) browserReq(t *testing.T, method, path, host, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

func setupGuarded(t *testing.T, allowedHosts, cors []string) *testBundle {
	t.Helper()
	return setupWith(t, setupOpts{config: func(c *api.Config) {
		c.ListenHost = "127.0.0.1"
		c.AllowedHosts = allowedHosts
		c.CORSOrigins = cors
	}})
}

func (b *testBundle) queuedJobs(t *testing.T) int {
	t.Helper()
	jobs, err := b.store.List(store.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(jobs)
}

// DNS rebinding: a page of attacker.example whose name resolves to
// 127.0.0.1 reaches the daemon as same-origin, but its Host header names
// attacker.example. A loopback daemon answers loopback names only.
func TestGuard_HostOnLoopback(t *testing.T) {
	t.Parallel()
	b := setupGuarded(t, []string{"gpu-box.lan", "10.0.0.5:8000"}, nil)
	for _, host := range []string{"127.0.0.1:8000", "localhost", "LOCALHOST:8000", "[::1]:8000", "127.0.0.2", "gpu-box.lan:1234", "gpu-box.lan", "10.0.0.5:8000", ""} {
		if rec := b.browserReq(t, http.MethodGet, "/jobs", host, ""); rec.Code != http.StatusOK {
			t.Errorf("Host %q: %d %s, want 200", host, rec.Code, rec.Body)
		}
	}
	for _, host := range []string{"attacker.example", "attacker.example:8000", "localhost.attacker.example", "gpu-box.lan.attacker.example", "10.0.0.5:9000", "10.0.0.5"} {
		wantError(t, b.browserReq(t, http.MethodGet, "/jobs", host, ""), http.StatusForbidden, api.CodeForbiddenHost, "server.allowed_hosts")
	}
	// The /v1/ door answers in OpenAI's shape.
	rec := b.browserReq(t, http.MethodGet, "/v1/models", "attacker.example", "")
	wantOAIError(t, http.StatusForbidden, rec.Body.Bytes(), rec.Code, "permission_error", api.CodeForbiddenHost, "")

	// A daemon on another interface without allowed_hosts answers any name.
	open := setupWith(t, setupOpts{config: func(c *api.Config) { c.ListenHost = "0.0.0.0" }})
	if rec := open.browserReq(t, http.MethodGet, "/jobs", "anything.example", ""); rec.Code != http.StatusOK {
		t.Errorf("0.0.0.0 listener: %d, want 200", rec.Code)
	}
}

// CSRF: a foreign page may not change state, whatever the content type;
// the same origin (the dashboard) and listed origins may.
func TestGuard_ForeignOriginCannotChangeState(t *testing.T) {
	t.Parallel()
	b := setupGuarded(t, nil, []string{"http://localhost:3000"})
	var unloads calls
	b.ctl.UnloadFunc = func(_ context.Context, m string) error { unloads.add(m); return nil }
	const job = `{"model":"llama","prompt":"hi"}`

	for _, origin := range []string{"http://attacker.example", "null", "http://127.0.0.1:9999", "http://localhost:3001", "http://127.0.0.1:8000.attacker.example"} {
		for _, ct := range []string{"text/plain", "application/json"} {
			wantError(t, b.browserReq(t, http.MethodPost, "/jobs", "127.0.0.1:8000", job, "Origin", origin, "Content-Type", ct),
				http.StatusForbidden, api.CodeForbiddenOrigin, "server.cors_origins")
		}
		wantError(t, b.browserReq(t, http.MethodPost, "/models/llama/unload", "127.0.0.1:8000", "", "Origin", origin),
			http.StatusForbidden, api.CodeForbiddenOrigin)
		wantError(t, b.browserReq(t, http.MethodDelete, "/jobs/abc", "127.0.0.1:8000", "", "Origin", origin),
			http.StatusForbidden, api.CodeForbiddenOrigin)
		rec := b.browserReq(t, http.MethodPost, "/v1/chat/completions", "127.0.0.1:8000", `{}`, "Origin", origin, "Content-Type", "application/json")
		wantOAIError(t, http.StatusForbidden, rec.Body.Bytes(), rec.Code, "permission_error", api.CodeForbiddenOrigin, "")
	}
	if n := b.queuedJobs(t); n != 0 || len(unloads.get()) != 0 {
		t.Fatalf("foreign origins queued %d jobs and unloaded %v", n, unloads.get())
	}

	// Reads are not refused (a browser keeps their answer from the page
	// without CORS headers), and get no CORS headers.
	rec := b.browserReq(t, http.MethodGet, "/jobs", "127.0.0.1:8000", "", "Origin", "http://attacker.example")
	if rec.Code != http.StatusOK || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign GET: %d ACAO %q", rec.Code, rec.Header().Get("Access-Control-Allow-Origin"))
	}

	// The dashboard: same origin, JSON.
	for _, tt := range []struct{ origin, host string }{
		{"http://127.0.0.1:8000", "127.0.0.1:8000"},
		{"http://localhost", "localhost:80"},
		{"http://LOCALHOST:8000", "localhost:8000"},
	} {
		rec := b.browserReq(t, http.MethodPost, "/jobs", tt.host, job, "Origin", tt.origin, "Content-Type", "application/json", "Sec-Fetch-Site", "same-origin")
		if rec.Code != http.StatusAccepted {
			t.Fatalf("same origin %s: %d %s", tt.origin, rec.Code, rec.Body)
		}
	}
	if rec := b.browserReq(t, http.MethodPost, "/models/llama/unload", "127.0.0.1:8000", "", "Origin", "http://127.0.0.1:8000"); rec.Code != http.StatusAccepted {
		t.Fatalf("same-origin unload: %d %s", rec.Code, rec.Body)
	}
	// A listed origin, with CORS headers on its answers.
	rec = b.browserReq(t, http.MethodPost, "/jobs", "127.0.0.1:8000", job, "Origin", "http://localhost:3000", "Content-Type", "application/json")
	if rec.Code != http.StatusAccepted || rec.Header().Get("Access-Control-Allow-Origin") != "http://localhost:3000" ||
		!strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Location") {
		t.Fatalf("listed origin: %d %v", rec.Code, rec.Header())
	}
	if n := b.queuedJobs(t); n != 4 || len(unloads.get()) != 1 {
		t.Fatalf("allowed requests: %d jobs, unloads %v", n, unloads.get())
	}
}

// A page of another site may not make the server take a slot (load a
// model, evict others) with a GET, which carries no Origin (an <img> on
// /upstream/…, a <script> on /slots): browsers label it Sec-Fetch-Site
// cross-site or same-site. The dashboard (same-origin), a listed origin and
// clients that are not browsers keep working.
func TestGuard_ForeignPageCannotLoadModels(t *testing.T) {
	t.Parallel()
	ob := setupOpenAI(t, func(c *api.Config) { c.CORSOrigins = []string{"http://localhost:3000"} })
	for _, site := range []string{"cross-site", "same-site"} {
		for _, path := range []string{"/upstream/qwen/health", "/slots?model=qwen", "/props?model=qwen"} {
			rec := ob.do(t, http.MethodGet, path, "", "Sec-Fetch-Site", site, "Sec-Fetch-Dest", "image")
			wantOAIError(t, http.StatusForbidden, rec.Body.Bytes(), rec.Code, "permission_error", api.CodeForbiddenOrigin, "")
		}
		rec := ob.do(t, http.MethodGet, "/upstream/qwen/health", "", "Sec-Fetch-Site", site, "Origin", "http://attacker.example")
		wantOAIError(t, http.StatusForbidden, rec.Body.Bytes(), rec.Code, "permission_error", api.CodeForbiddenOrigin, "")
	}
	if got := ob.acquires.get(); len(got) != 0 {
		t.Fatalf("foreign pages took slots: %v", got)
	}
	for _, hdr := range [][]string{
		nil, // curl, the SDKs
		{"Sec-Fetch-Site", "same-origin"},
		{"Sec-Fetch-Site", "none"},
		{"Sec-Fetch-Site", "cross-site", "Origin", "http://localhost:3000"},
	} {
		if rec := ob.do(t, http.MethodGet, "/upstream/qwen/health", "", hdr...); rec.Code != http.StatusOK {
			t.Fatalf("%v: %d %s", hdr, rec.Code, rec.Body)
		}
	}
}

func TestGuard_CORSPreflight(t *testing.T) {
	t.Parallel()
	b := setupGuarded(t, nil, []string{"http://localhost:3000", "https://ui.example/"})
	for _, origin := range []string{"http://localhost:3000", "https://ui.example"} {
		rec := b.browserReq(t, http.MethodOptions, "/v1/chat/completions", "127.0.0.1:8000", "",
			"Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type")
		h := rec.Header()
		if rec.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != origin ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
			t.Fatalf("preflight from %s: %d %v", origin, rec.Code, h)
		}
	}
	rec := b.browserReq(t, http.MethodOptions, "/jobs", "127.0.0.1:8000", "",
		"Origin", "http://attacker.example", "Access-Control-Request-Method", "POST")
	wantError(t, rec, http.StatusForbidden, api.CodeForbiddenOrigin)
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("foreign preflight got Access-Control-Allow-Origin")
	}
}

// JSON routes refuse the content types a page can send cross-origin without
// a preflight when a browser sent them; curl's defaults still work.
func TestGuard_JSONContentType(t *testing.T) {
	t.Parallel()
	b := setupGuarded(t, nil, nil)
	const job = `{"model":"llama","prompt":"hi"}`
	for _, tt := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"JSON", []string{"Content-Type", "application/json; charset=utf-8"}, http.StatusAccepted},
		{"CurlDefault", []string{"Content-Type", "application/x-www-form-urlencoded"}, http.StatusAccepted},
		{"NoType", nil, http.StatusAccepted},
		{"TextPlain", []string{"Content-Type", "text/plain"}, http.StatusUnsupportedMediaType},
		{"Multipart", []string{"Content-Type", "multipart/form-data; boundary=x"}, http.StatusUnsupportedMediaType},
		{"BrowserForm", []string{"Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-origin"}, http.StatusUnsupportedMediaType},
		{"BrowserNoType", []string{"Sec-Fetch-Site", "same-origin"}, http.StatusUnsupportedMediaType},
		{"SameOriginForm", []string{"Content-Type", "text/plain", "Origin", "http://127.0.0.1:8000"}, http.StatusUnsupportedMediaType},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := b.browserReq(t, http.MethodPost, "/jobs", "127.0.0.1:8000", job, tt.hdr...)
			if tt.code == http.StatusAccepted {
				if rec.Code != tt.code {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
				return
			}
			wantError(t, rec, tt.code, api.CodeUnsupportedMed, "application/json")
		})
	}
	rec := b.browserReq(t, http.MethodPost, "/v1/completions", "127.0.0.1:8000", `{"model":"llama","prompt":"x"}`, "Content-Type", "text/plain")
	wantOAIError(t, http.StatusUnsupportedMediaType, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeUnsupportedMed, "")
}
