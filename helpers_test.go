package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/vramcram/vramcram/config"
)

// writeConfig writes body to a config file in a fresh temp dir.
func writeConfig(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads body (no file when body is "") with environ and fails the
// test on any error.
func mustLoad(t *testing.T, body string, environ []string) *config.Config {
	t.Helper()
	path := ""
	if body != "" {
		path = writeConfig(t, body)
	}
	cfg, err := config.Load(path, environ)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	return cfg
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
