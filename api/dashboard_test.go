package api_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

// dashboardPaths are the page and the assets it references.
var dashboardPaths = map[string]string{
	"/":                    "text/html",
	"/dashboard/app.js":    "text/javascript",
	"/dashboard/style.css": "text/css",
	// The page's separate parts.
	"/dashboard/playground.js": "text/javascript",
	"/dashboard/logs.js":       "text/javascript",
}

func TestDashboard_ServesPageAndAssets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, ctype := range dashboardPaths {
		rec := b.do(t, http.MethodGet, path, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d %s", path, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Content-Type"); !strings.HasPrefix(got, ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", path, got, ctype)
		}
		if got := rec.Header().Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'none'") || !strings.Contains(got, "img-src 'self' data:") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, got)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", path)
		}
		if rec.Body.Len() == 0 {
			t.Errorf("GET %s: empty body", path)
		}
	}
}

// TestDashboard_References checks that every local file the page names is
// served, and that the page loads nothing from another host (it must work
// offline) and has no inline script, which the CSP would block.
func TestDashboard_References(t *testing.T) {
	t.Parallel()
	b := setup(t)
	page := b.do(t, http.MethodGet, "/", "").Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("page references %v, want the script and the stylesheet", refs)
	}
	for _, r := range refs {
		if _, ok := dashboardPaths[r[1]]; !ok {
			t.Errorf("page references %q, which the server does not serve", r[1])
		}
	}
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(page) || strings.Contains(page, "<style") {
		t.Error("page has inline script or style; the CSP allows only 'self'")
	}
	for path := range dashboardPaths {
		body := b.do(t, http.MethodGet, path, "").Body.String()
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).FindString(body); m != "" {
			t.Errorf("%s refers to another host: %q", path, m)
		}
	}
}

func TestDashboard_OpenWithoutKey(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.APIKeys = []string{"k1"} }})
	for path := range dashboardPaths {
		for _, authz := range []string{"", "Bearer wrong"} {
			if rec := serve(b.handler, authRoute{http.MethodGet, path, ""}, authz); rec.Code != http.StatusOK {
				t.Errorf("GET %s with %q: status %d, want 200", path, authz, rec.Code)
			}
		}
	}
	// Only those exact routes are open: neighbours still need the key.
	for _, path := range []string{"/dashboard/", "/dashboard/app.js/x", "/dashboard/index.html", "/index.html", "/models"} {
		rec := serve(b.handler, authRoute{http.MethodGet, path, ""}, "")
		wantError(t, rec, http.StatusUnauthorized, api.CodeUnauthorized, "API key")
	}
}

func TestDashboard_OtherMethods(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.do(t, http.MethodPost, "/", `{}`)
	wantError(t, rec, http.StatusMethodNotAllowed, api.CodeMethod)
	rec = b.do(t, http.MethodGet, "/dashboard/missing.js", "")
	wantError(t, rec, http.StatusNotFound, api.CodeNotFound)
}
