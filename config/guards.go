package config

import (
	"net"
	"net/url"
	"strings"
)

// validateGuards checks the server's browser guards and connection limits.
func validateGuards(p *problems, s ServerConfig) {
	for i, o := range s.CORSOrigins {
		if msg := originProblem(o); msg != "" {
			p.addf("server.cors_origins[%d]: %q %s", i, o, msg)
		}
	}
	for i, h := range s.AllowedHosts {
		if msg := hostProblem(h); msg != "" {
			p.addf("server.allowed_hosts[%d]: %q %s", i, h, msg)
		}
	}
	p.atLeast("server.body_idle_timeout_seconds", s.BodyIdleTimeoutSeconds, 1)
	p.atLeast("server.max_connections", s.MaxConnections, 1)
	p.atLeast("server.max_inflight_body_mb", s.MaxInflightBodyMB, 1)
	p.atLeast("server.max_event_clients", s.MaxEventClients, 1)
	if s.MaxInflightBodyMB > 0 && int64(s.MaxInflightBodyMB)<<20 < s.MaxBodyBytes {
		p.addf("server.max_inflight_body_mb: %d MiB is less than one body of server.max_body_bytes (%d bytes)", s.MaxInflightBodyMB, s.MaxBodyBytes)
	}
}

// originProblem says what is wrong with a browser origin, or "".
func originProblem(o string) string {
	u, err := url.Parse(o)
	switch {
	case o == "*":
		return "is not allowed: list each origin (a wildcard would let every web page drive the API)"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "must be an origin: http(s)://host[:port], e.g. http://localhost:3000"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.User != nil:
		return "must be an origin only: scheme, host and port, no path, query or user"
	}
	return ""
}

// hostProblem says what is wrong with an allowed Host value, or "".
func hostProblem(h string) string {
	const usage = "must be a host name or IP, optionally with :port (e.g. gpu-box.lan or gpu-box.lan:8000)"
	if strings.ContainsAny(h, "/ @?#*") {
		return usage
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if port == "" {
			return "has an empty port"
		}
		host = hh
	}
	if host == "" {
		return usage
	}
	return ""
}
