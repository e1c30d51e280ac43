package api

import (
	"embed"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// dashboardFiles holds the dashboard page: plain HTML, CSS and JavaScript,
// embedded so the binary serves it with no build step and no network.
//
//go:embed dashboard/index.html dashboard/app.js dashboard/style.css dashboard/playground.js dashboard/logs.js
var dashboardFiles embed.FS

// dashboardAsset is one embedded file and the content type it is served with.
type dashboardAsset struct {
	file, contentType string
}

// dashboardAssets maps each URL path of the dashboard to its file. These
// paths are served without an API key: they hold no data, and the page asks
// for the key itself.
var dashboardAssets = map[string]dashboardAsset{
	"/":                    {"dashboard/index.html", "text/html; charset=utf-8"},
	"/dashboard/app.js":    {"dashboard/app.js", "text/javascript; charset=utf-8"},
	"/dashboard/style.css": {"dashboard/style.css", "text/css; charset=utf-8"},
	// Separate files for separate parts of the page.
	"/dashboard/playground.js": {"dashboard/playground.js", "text/javascript; charset=utf-8"},
	"/dashboard/logs.js":       {"dashboard/logs.js", "text/javascript; charset=utf-8"},
}

// dashboardCSP allows only the page's own files, data: images (diffusion
// results) and requests to this server.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// routeDashboard adds GET / and the page's assets.
func (s *Server) routeDashboard(e *echo.Echo) {
	for path := range dashboardAssets {
		e.GET(path, s.dashboard)
	}
}

// publicPath reports whether the route path (echo's c.Path(), the matched
// route rather than the raw URL) is served without an API key.
func publicPath(path string) bool {
	_, ok := dashboardAssets[path]
	return ok || path == "/health"
}

// dashboard serves one embedded file of the page.
func (s *Server) dashboard(c echo.Context) error {
	a, ok := dashboardAssets[c.Path()]
	if !ok {
		return apiErr(http.StatusNotFound, CodeNotFound, "no such route")
	}
	b, err := dashboardFiles.ReadFile(a.file)
	if err != nil {
		return fmt.Errorf("read embedded %s: %w", a.file, err)
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, a.contentType, b)
}
