package main

import (
	"net/url"
	"strings"
)

// Storage backends (storage.backend).
const (
	backendBbolt = "bbolt"
	backendRedis = "redis"
)

// validateBackend checks storage.backend and, for redis, storage.redis.*.
func validateBackend(s StorageConfig, p *problems) {
	switch s.Backend {
	case backendBbolt:
		return
	case backendRedis:
	default:
		p.addf("storage.backend: must be bbolt or redis, got %q", s.Backend)
		return
	}
	r := s.Redis
	u, err := url.Parse(r.URL)
	switch {
	case r.URL == "":
		p.addf("storage.redis.url: must be set when storage.backend is redis")
	case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") || (u.Scheme != "unix" && u.Host == ""):
		p.addf("storage.redis.url: want redis://host:port/db, rediss://… or unix:///path, got %q", r.URL)
	}
	if r.LeaseSeconds < 3 {
		p.addf("storage.redis.lease_seconds: must be at least 3 (leases are renewed every third of it), got %d", r.LeaseSeconds)
	}
	if strings.ContainsAny(r.Node, " \t\n/") || len(r.Node) > 128 {
		p.addf("storage.redis.node: must be at most 128 characters without spaces or '/', got %q", r.Node)
	}
}
