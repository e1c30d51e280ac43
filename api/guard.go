package api

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Codes of the browser guards.
const (
	CodeForbiddenHost   = "forbidden_host"   // Host is not a name this server answers to
	CodeForbiddenOrigin = "forbidden_origin" // a state-changing request from a foreign web page
)

// The browser guards. A daemon on 127.0.0.1 without keys trusts whoever can
// reach the port; a web page in the user's browser can reach it too:
//   - DNS rebinding: attacker.example resolves to 127.0.0.1, and the page
//     reads the API as same-origin. The Host header still says
//     attacker.example, so on a loopback listener only loopback names (and
//     server.allowed_hosts) are answered.
//   - CSRF: a page POSTs (a form, or fetch with text/plain) to
//     http://127.0.0.1:8000. Browsers send Origin with every cross-origin
//     POST, PUT, PATCH and DELETE; one that is neither this server nor in
//     server.cors_origins is refused, and JSON routes refuse the content
//     types a browser may send cross-origin without a preflight
//     (requireJSON).
// Clients that are not browsers (curl, the SDKs, the CLI) send no Origin
// and are not affected.

// hostGuard is the Host allow-list; nil allows every Host.
type hostGuard struct {
	names []string // lower case, as configured: "name" (any port) or "name:port"
}

// newHostGuard returns the guard for a server listening on listenHost: a
// loopback listener, or any listener with server.allowed_hosts set, answers
// only loopback names, its own listen host and allowed.
func newHostGuard(listenHost string, allowed []string) *hostGuard {
	if !isLoopbackName(listenHost) && len(allowed) == 0 {
		return nil
	}
	g := &hostGuard{}
	for _, h := range append([]string{listenHost}, allowed...) {
		h = strings.ToLower(strings.TrimSpace(h))
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = strings.TrimSuffix(strings.Trim(h, "[]"), ".") // a name without port, as allows compares it
		}
		if h != "" {
			g.names = append(g.names, h)
		}
	}
	return g
}

// allows reports whether hostport (a request's Host) may be answered. An
// empty Host (HTTP/1.0) is no browser's and is allowed.
func (g *hostGuard) allows(hostport string) bool {
	if g == nil || hostport == "" {
		return true
	}
	hostport = strings.ToLower(hostport)
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if isLoopbackName(host) {
		return true
	}
	return slices.Contains(g.names, host) || slices.Contains(g.names, hostport)
}

// isLoopbackName reports whether host names this machine only: localhost or
// a loopback IP.
func isLoopbackName(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard is echo's Pre middleware: the Host check, then Origin (CORS
// preflight and headers, and the refusal of foreign state-changing
// requests).
func (s *Server) guard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if !s.hosts.allows(r.Host) {
			return apiErr(http.StatusForbidden, CodeForbiddenHost,
				"Host "+quote(r.Host)+" is not served here; add it to server.allowed_hosts to allow it")
		}
		origin := r.Header.Get("Origin")
		if origin == "" {
			return next(c)
		}
		allowed := s.corsAllowed(origin)
		if allowed {
			setCORSHeaders(c.Response().Header(), origin)
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				return apiErr(http.StatusForbidden, CodeForbiddenOrigin,
					"origin "+quote(origin)+" is not in server.cors_origins")
			}
			return preflight(c)
		}
		if stateChanging(r.Method) && !allowed && !sameOrigin(origin, r.Host) {
			return apiErr(http.StatusForbidden, CodeForbiddenOrigin,
				"cross-origin "+r.Method+" from "+quote(origin)+" refused; add the origin to server.cors_origins to allow it")
		}
		return next(c)
	}
}

// refuseForeignLoad refuses, on the routes that take a slot (and so may
// load a model and evict others), a request a browser made for a page of
// another site that server.cors_origins does not list. The Origin check in
// guard covers state-changing methods; this covers the GETs that need no
// Origin (an <img> or <script> pointing at /upstream/…/health, or a link):
// browsers label every request with Sec-Fetch-Site, which clients that are
// not browsers do not send.
func (s *Server) refuseForeignLoad(c echo.Context) error {
	r := c.Request()
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
	default: // same-origin (the dashboard), none (typed by the user), absent
		return nil
	}
	if origin := r.Header.Get("Origin"); origin != "" && (s.corsAllowed(origin) || sameOrigin(origin, r.Host)) {
		return nil
	}
	return apiErr(http.StatusForbidden, CodeForbiddenOrigin,
		"a request from another site's page may not use a model here; add the site's origin to server.cors_origins to allow it")
}

func quote(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}

// stateChanging reports whether method may change state (the methods a
// cross-origin page must not use unless allowed).
func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// sameOrigin reports whether origin (scheme://host[:port]) names host, the
// request's Host: the page was served by this server (the dashboard).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" and other opaque origins are foreign
	}
	return strings.EqualFold(withPort(u.Host, u.Scheme), withPort(host, u.Scheme))
}

// withPort adds the scheme's default port to hostport when it has none.
func withPort(hostport, scheme string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(hostport, "[]"), port)
}

// corsAllowed reports whether origin is in server.cors_origins.
func (s *Server) corsAllowed(origin string) bool {
	for _, o := range s.cfg.CORSOrigins {
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// setCORSHeaders lets the page at origin read the answer, with the headers
// clients act on.
func setCORSHeaders(h http.Header, origin string) {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "Location, Retry-After, X-Job-Id")
}

// preflight answers a CORS preflight of an allowed origin: 204 with the
// methods and headers the API takes.
func preflight(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
	h.Set("Access-Control-Max-Age", "600")
	return c.NoContent(http.StatusNoContent)
}

// requireJSON refuses a JSON route's body that is not declared JSON when a
// browser may have sent it: text/plain, forms and multipart are the types a
// page may POST cross-origin without a preflight. Clients that are not
// browsers (no Origin, no Sec-Fetch-Site) may leave the type out or send
// curl's default (application/x-www-form-urlencoded for -d).
func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return nil
	}
	browser := r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != ""
	if !browser && (ct == "" || mt == "application/x-www-form-urlencoded") {
		return nil
	}
	return apiErr(http.StatusUnsupportedMediaType, CodeUnsupportedMed,
		"Content-Type "+quote(ct)+" is not JSON; send the body as application/json")
}
