package config

import (
	"net/url"
	"strings"
)

// StorageConfig is where the bbolt file, results and pid records live.
type StorageConfig struct {
	DataDir        string `koanf:"data_dir"`        // default ./data
	RetentionHours int    `koanf:"retention_hours"` // default 168; 0 keeps forever
	MaxFileMB      int    `koanf:"max_file_mb"`     // default 200: largest /v1/files upload
	// Backend holds the queue: bbolt (one machine, the default) or redis
	// (a fleet sharing one queue; docs/fleet.md).
	Backend string      `koanf:"backend"`
	Redis   RedisConfig `koanf:"redis"`
}

// RedisConfig is the shared queue of a fleet (storage.backend: redis).
type RedisConfig struct {
	URL          string `koanf:"url"`           // redis://host:port/db
	LeaseSeconds int    `koanf:"lease_seconds"` // a dead node's jobs requeue after this; default 30
	Node         string `koanf:"node"`          // this node's name in the fleet; default the host name
	Prefix       string `koanf:"prefix"`        // key prefix; default "vramcram:"
	// AdvertiseURL is how the other nodes reach this one (they relay
	// interactive requests to it); default http://server.host:server.port,
	// a wildcard host replaced by the address this machine reaches Redis from.
	AdvertiseURL string `koanf:"advertise_url"`
}

// validateStorage checks storage.*.
func validateStorage(p *problems, s StorageConfig) {
	if s.DataDir == "" {
		p.addf("storage.data_dir: must not be empty")
	}
	if s.RetentionHours < 0 {
		p.addf("storage.retention_hours: must be 0 (keep forever) or more, got %d", s.RetentionHours)
	}
	p.between("storage.max_file_mb", s.MaxFileMB, 1, 1<<20)
	validateBackend(s, p)
}

// Storage backends (storage.backend).
const (
	BackendBBolt = "bbolt"
	BackendRedis = "redis"
)

// validateBackend checks storage.backend and, for redis, storage.redis.*.
func validateBackend(s StorageConfig, p *problems) {
	switch s.Backend {
	case BackendBBolt:
		return
	case BackendRedis:
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
	if a := r.AdvertiseURL; a != "" {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || u.Path != "" && u.Path != "/" {
			p.addf("storage.redis.advertise_url: want http://HOST:PORT as the other nodes reach this one, got %q", a)
		}
	}
}
