package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

// authRoute is one route of the API with a request that it would accept.
type authRoute struct {
	method, path, body string
}

func authRoutes(t *testing.T, b *testBundle) []authRoute {
	t.Helper()
	queued := b.enqueue(t, "llama")
	done := b.enqueue(t, "sd")
	b.claim(t, "sd")
	if err := b.store.Complete(done.ID, []byte(`{"type":"diffusion"}`)); err != nil {
		t.Fatal(err)
	}
	return []authRoute{
		{http.MethodGet, "/models", ""},
		{http.MethodPost, "/models/llama/load", ""},
		{http.MethodPost, "/models/llama/unload", ""},
		{http.MethodPost, "/jobs", `{"model":"llama","prompt":"x"}`},
		{http.MethodGet, "/jobs", ""},
		{http.MethodGet, "/jobs/" + queued.ID, ""},
		{http.MethodGet, "/jobs/" + done.ID + "/result", ""},
		{http.MethodDelete, "/jobs/" + queued.ID, ""},
		{http.MethodGet, "/events", ""},
		{http.MethodGet, "/no-such-route", ""},
	}
}

// serve sends one request whose context is already cancelled when the route
// is /events, so the stream ends at once.
func serve(h http.Handler, r authRoute, authz string) *httptest.ResponseRecorder {
	var req *http.Request
	if r.body != "" {
		req = httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	} else {
		req = httptest.NewRequest(r.method, r.path, nil)
	}
	if r.path == "/events" {
		ctx, cancel := context.WithCancel(req.Context())
		cancel()
		req = req.WithContext(ctx)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAuth_KeysRequired(t *testing.T) {
	t.Parallel()
	bad := []string{
		"",
		"Bearer",
		"Bearer ",
		"Bearer wrong",
		"Bearer k1x",
		"Bearer k",
		"Bearer k1,k2",
		"Basic k1",
		"k1",
		"Token k1",
	}
	for _, authz := range bad {
		t.Run("Rejects/"+authz, func(t *testing.T) {
			t.Parallel()
			b := setupWith(t, setupOpts{config: func(c *api.Config) { c.APIKeys = []string{"k1", "k2"} }})
			for _, r := range authRoutes(t, b) {
				rec := serve(b.handler, r, authz)
				if rec.Code != http.StatusUnauthorized {
					t.Errorf("%s %s: status %d, want 401", r.method, r.path, rec.Code)
					continue
				}
				wantError(t, rec, http.StatusUnauthorized, api.CodeUnauthorized, "API key")
				if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate %q", r.method, r.path, got)
				}
			}
			if got := b.notifs.get(); len(got) != 0 {
				t.Errorf("a rejected submit reached the scheduler: %v", got)
			}
		})
	}

	good := []string{"Bearer k1", "Bearer k2", "Bearer  k1 ", "bearer k1", "BEARER k2"}
	for _, authz := range good {
		t.Run("Accepts/"+authz, func(t *testing.T) {
			t.Parallel()
			b := setupWith(t, setupOpts{config: func(c *api.Config) { c.APIKeys = []string{"k1", "k2"} }})
			for _, r := range authRoutes(t, b) {
				rec := serve(b.handler, r, authz)
				want := http.StatusOK
				switch {
				case r.method == http.MethodPost: // submit, load, unload
					want = http.StatusAccepted
				case r.path == "/no-such-route":
					want = http.StatusNotFound
				}
				if rec.Code != want {
					t.Errorf("%s %s: status %d, want %d (%s)", r.method, r.path, rec.Code, want, rec.Body)
				}
			}
		})
	}

	t.Run("HealthIsOpen", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, setupOpts{config: func(c *api.Config) { c.APIKeys = []string{"k1"} }})
		for _, authz := range []string{"", "Bearer wrong"} {
			if rec := serve(b.handler, authRoute{http.MethodGet, "/health", ""}, authz); rec.Code != http.StatusOK {
				t.Errorf("GET /health with %q: status %d", authz, rec.Code)
			}
		}
	})
}

func TestAuth_NoKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, r := range authRoutes(t, b) {
		for _, authz := range []string{"", "Bearer anything"} {
			rec := serve(b.handler, r, authz)
			if rec.Code == http.StatusUnauthorized {
				t.Errorf("%s %s with %q: 401 without configured keys", r.method, r.path, authz)
			}
		}
	}
}
