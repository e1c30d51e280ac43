package config

import (
	"net"
	"strings"
	"unicode"
)

// ServerConfig is the HTTP API listener.
type ServerConfig struct {
	Host                string   `koanf:"host"`                  // default 127.0.0.1
	Port                int      `koanf:"port"`                  // default 8000
	MetricsPort         int      `koanf:"metrics_port"`          // default 9090; 0 disables
	APIKeys             []string `koanf:"api_keys"`              // default none
	AllowInsecureRemote bool     `koanf:"allow_insecure_remote"` // must be true to listen on a non-loopback host without api_keys
	MaxBodyBytes        int64    `koanf:"max_body_bytes"`        // default 1 MiB
	MaxPromptChars      int      `koanf:"max_prompt_chars"`      // default 100000
	// Browser guards: origins whose pages may call the API (CORS, and
	// state-changing requests), and Host values answered besides loopback
	// names.
	CORSOrigins  []string `koanf:"cors_origins"`  // default none
	AllowedHosts []string `koanf:"allowed_hosts"` // default none
	// Connection and body limits.
	BodyIdleTimeoutSeconds int `koanf:"body_idle_timeout_seconds"` // default 30
	MaxConnections         int `koanf:"max_connections"`           // default 1024
	MaxInflightBodyMB      int `koanf:"max_inflight_body_mb"`      // default 256
	MaxEventClients        int `koanf:"max_event_clients"`         // default 256
}

// validateServer checks server.*.
func validateServer(p *problems, s ServerConfig) {
	if s.Host == "" {
		p.addf("server.host: must not be empty (127.0.0.1 serves this machine only, 0.0.0.0 every interface)")
	}
	p.port("server.port", s.Port, false)
	p.port("server.metrics_port", s.MetricsPort, true)
	if s.MetricsPort != 0 && s.Port == s.MetricsPort {
		p.addf("server.metrics_port: %d is also server.port; give them different ports (or 0 to disable metrics)", s.MetricsPort)
	}
	for i, k := range s.APIKeys {
		switch {
		case strings.TrimSpace(k) == "":
			p.addf("server.api_keys[%d]: must not be empty", i)
		case k != strings.TrimSpace(k) || strings.ContainsFunc(k, unicode.IsControl):
			// A header cannot carry it, and the server compares trimmed
			// tokens: such a key could never match (a YAML block scalar
			// leaves a trailing newline).
			p.addf("server.api_keys[%d]: must not start or end with spaces or contain control characters (a trailing newline?)", i)
		}
	}
	if s.Host != "" && !isLoopbackHost(s.Host) && len(s.APIKeys) == 0 && !s.AllowInsecureRemote {
		p.addf("server.host: %q is reachable from other machines but server.api_keys is empty; "+
			"set server.api_keys to require a bearer key, or set server.allow_insecure_remote: true to serve without authentication", s.Host)
	}
	if s.MaxBodyBytes < 1 {
		p.addf("server.max_body_bytes: must be at least 1, got %d", s.MaxBodyBytes)
	}
	if s.MaxPromptChars < 1 {
		p.addf("server.max_prompt_chars: must be at least 1, got %d", s.MaxPromptChars)
	}
	validateGuards(p, s)
}

// isLoopbackHost reports whether a listen host serves only this machine.
// Names other than localhost count as remote: what they resolve to can change.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
