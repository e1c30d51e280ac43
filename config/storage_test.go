package config

import (
	"strings"
	"testing"
)

func TestLoadConfig_StorageBackendProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ yaml, want string }{
		{"storage: {backend: mysql}", `storage.backend: must be bbolt or redis, got "mysql"`},
		{"storage: {backend: redis, redis: {url: ''}}", "storage.redis.url: must be set when storage.backend is redis"},
		{"storage: {backend: redis, redis: {url: 'http://x:6379'}}", `storage.redis.url: want redis://host:port/db`},
		{"storage: {backend: redis, redis: {lease_seconds: 1}}", "storage.redis.lease_seconds: must be at least 3"},
		{"storage: {backend: redis, redis: {node: 'a b'}}", "storage.redis.node: must be at most 128 characters"},
		{"storage: {backend: redis, redis: {advertise_url: 'gpu-box-1:8000'}}", "storage.redis.advertise_url: want http://HOST:PORT"},
		{"storage: {backend: redis, redis: {advertise_url: 'http://gpu-box-1'}}", "storage.redis.advertise_url: want http://HOST:PORT"},
	} {
		problems := loadProblems(t, tc.yaml, nil)
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, tc.want)
		}
		if !found {
			t.Errorf("%s: problems %q, want one starting %q", tc.yaml, problems, tc.want)
		}
	}
	// The same keys are fine when the backend is bbolt, and a good redis
	// section loads.
	for _, body := range []string{
		"storage: {backend: bbolt, redis: {lease_seconds: 1}}",
		"storage: {backend: redis, redis: {url: 'redis://10.0.0.5:6379/0', lease_seconds: 30, node: gpu-1}}",
		"storage: {backend: redis, redis: {url: 'redis://10.0.0.5:6379/0', advertise_url: 'http://10.0.0.7:8000'}}",
	} {
		if _, err := Load(writeConfig(t, body), nil); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
