package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

func TestAdmin_Reload(t *testing.T) {
	t.Parallel()
	cfgErr := ""
	reply := map[string]any{"status": "applied", "added": []string{"c"}}
	var fail error
	b := setupWith(t, setupOpts{config: func(c *api.Config) {
		c.APIKeys = []string{"k1"}
		c.Reload = func(context.Context) (any, error) {
			if fail != nil {
				cfgErr = fail.Error()
				return map[string]any{"status": "rejected"}, fail
			}
			cfgErr = ""
			return reply, nil
		}
		c.ConfigError = func() string { return cfgErr }
		c.RunningConfig = func() any { return map[string]any{"path": "/etc/vramcram.yaml"} }
	}})
	// A key is needed when keys are set.
	wantError(t, b.do(t, http.MethodPost, "/admin/reload", ""), http.StatusUnauthorized, "unauthorized")
	wantError(t, b.do(t, http.MethodGet, "/admin/config", ""), http.StatusUnauthorized, "unauthorized")

	rec := b.do(t, http.MethodPost, "/admin/reload", "", "Authorization", "Bearer k1")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"added":["c"]`) {
		t.Fatalf("reload: %d %s", rec.Code, rec.Body)
	}
	fail = errors.New("config.yaml: models.llm[0].ttl_seconds: must be at least 0, got -5")
	rec = b.do(t, http.MethodPost, "/admin/reload", "", "Authorization", "Bearer k1")
	wantError(t, rec, http.StatusUnprocessableEntity, "invalid_config", "models.llm[0].ttl_seconds", "stays in force")
	if rec := b.do(t, http.MethodGet, "/health", "", "Authorization", "Bearer k1"); !strings.Contains(rec.Body.String(), `"config_error":"config.yaml: models.llm[0].ttl_seconds`) {
		t.Fatalf("health after a rejected reload: %s", rec.Body)
	}
	// Without the key, /health says the status alone: no config error, no
	// models, no GPUs.
	if rec := b.do(t, http.MethodGet, "/health", ""); rec.Code != http.StatusOK || rec.Body.String() != `{"status":"healthy"}`+"\n" {
		t.Fatalf("health without a key: %d %q", rec.Code, rec.Body)
	}
	if rec := b.do(t, http.MethodGet, "/admin/config", "", "Authorization", "Bearer k1"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "/etc/vramcram.yaml") {
		t.Fatalf("admin config: %d %s", rec.Code, rec.Body)
	}
	fail = nil
	b.do(t, http.MethodPost, "/admin/reload", "", "Authorization", "Bearer k1")
	if rec := b.do(t, http.MethodGet, "/health", "", "Authorization", "Bearer k1"); rec.Code != 200 || strings.Contains(rec.Body.String(), "config_error") {
		t.Fatalf("config_error still in health after an applied reload: %s", rec.Body)
	}
}
