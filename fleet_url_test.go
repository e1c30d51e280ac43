package main

import (
	"testing"

	"github.com/vramcram/vramcram/config"
)

// The URL a node advertises to the fleet: the configured one, else its
// listen address, where a wildcard host is replaced by the address it
// reaches Redis from (every node advertised http://0.0.0.0:8000, so none
// ever relayed), and an IPv6 host is bracketed.
func TestAdvertiseURL(t *testing.T) {
	for _, tc := range []struct{ host, redis, advertise, want string }{
		{"127.0.0.1", "redis://127.0.0.1:6379/0", "", "http://127.0.0.1:8000"},
		{"0.0.0.0", "redis://127.0.0.1:6379/0", "", "http://127.0.0.1:8000"},
		{"::", "redis://127.0.0.1:6379/0", "", "http://127.0.0.1:8000"},
		{"::1", "redis://[::1]:6379/0", "", "http://[::1]:8000"},
		{"0.0.0.0", "redis://127.0.0.1:6379/0", "http://gpu-box-1.lan:8000", "http://gpu-box-1.lan:8000"},
	} {
		cfg := config.Default()
		cfg.Server.Host, cfg.Server.Port = tc.host, 8000
		cfg.Storage.Redis.URL, cfg.Storage.Redis.AdvertiseURL = tc.redis, tc.advertise
		if got := advertiseURL(&cfg); got != tc.want {
			t.Errorf("host %q, redis %q, advertise_url %q: %q, want %q", tc.host, tc.redis, tc.advertise, got, tc.want)
		}
	}
}
