package config

import (
	"slices"
	"testing"
)

func TestLoadConfig_ServerGuards(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, "", nil)
	s := cfg.Server
	if len(s.CORSOrigins) != 0 || len(s.AllowedHosts) != 0 || s.BodyIdleTimeoutSeconds != 30 ||
		s.MaxConnections != 1024 || s.MaxInflightBodyMB != 256 || s.MaxEventClients != 256 {
		t.Fatalf("defaults: %+v", s)
	}
	cfg = mustLoad(t, `server:
  cors_origins: ["http://localhost:3000", "https://ui.example.com"]
  allowed_hosts: [gpu-box.lan, "10.0.0.5:8000", "[fd00::1]:8000"]
  body_idle_timeout_seconds: 2
  max_connections: 64
  max_inflight_body_mb: 8
  max_event_clients: 4
`, []string{"VRAMCRAM_SERVER__MAX_EVENT_CLIENTS=5"})
	s = cfg.Server
	if !slices.Equal(s.CORSOrigins, []string{"http://localhost:3000", "https://ui.example.com"}) ||
		!slices.Equal(s.AllowedHosts, []string{"gpu-box.lan", "10.0.0.5:8000", "[fd00::1]:8000"}) ||
		s.BodyIdleTimeoutSeconds != 2 || s.MaxConnections != 64 || s.MaxInflightBodyMB != 8 || s.MaxEventClients != 5 {
		t.Fatalf("loaded: %+v", s)
	}
}

func TestLoadConfig_ServerGuardProblems(t *testing.T) {
	t.Parallel()
	got := loadProblems(t, `server:
  cors_origins: ["*", "localhost:3000", "http://ui.example/app", "ftp://x"]
  allowed_hosts: ["", "http://gpu-box.lan", "gpu-box.lan:"]
  body_idle_timeout_seconds: 0
  max_connections: 0
  max_inflight_body_mb: 0
  max_event_clients: -1
`, nil)
	requireProblems(t, got,
		`server.cors_origins[0]: "*" is not allowed`,
		`server.cors_origins[1]: "localhost:3000" must be an origin`,
		`server.cors_origins[2]: "http://ui.example/app" must be an origin only`,
		`server.cors_origins[3]: "ftp://x" must be an origin`,
		`server.allowed_hosts[0]: "" must be a host name`,
		`server.allowed_hosts[1]: "http://gpu-box.lan" must be a host name`,
		`server.allowed_hosts[2]: "gpu-box.lan:" has an empty port`,
		"server.body_idle_timeout_seconds: must be at least 1",
		"server.max_connections: must be at least 1",
		"server.max_inflight_body_mb: must be at least 1",
		"server.max_event_clients: must be at least 1",
	)
	requireProblems(t, loadProblems(t, "server: {max_body_bytes: 4194304, max_inflight_body_mb: 2}\n", nil),
		"server.max_inflight_body_mb: 2 MiB is less than one body of server.max_body_bytes")
}
