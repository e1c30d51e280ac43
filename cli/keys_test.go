package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// batch submit --wait --poll 0 is a usage error (it panicked in
// time.NewTicker).
func TestBatch_PollMustBePositive(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/files", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"file-1"}`))
	})
	mux.HandleFunc("POST /v1/batches", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id":"batch_1","object":"batch","status":"validating","endpoint":"/v1/chat/completions"}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	in := filepath.Join(t.TempDir(), "in.jsonl")
	os.WriteFile(in, []byte("{}\n"), 0o644)
	var out, errb bytes.Buffer
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("vramcram batch submit --wait --poll 0 panicked: %v", r)
		}
	}()
	code := Main("batch", []string{"submit", in, "--wait", "--poll", "0", "--url", srv.URL}, NewIO(nil, &out, &errb, func(string) string { return "" }))
	if code != 2 || !bytes.Contains(errb.Bytes(), []byte("--poll")) {
		t.Fatalf("exit %d, stderr %q; want a usage error naming --poll", code, errb.String())
	}
}

// VRAMCRAM_API_KEY with a trailing newline (read from a file) is trimmed;
// it was sent as it was and the failure read "cannot reach VramCram".
func TestClient_KeyWithTrailingNewline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"models":[]}`))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	env := map[string]string{EnvAPIKey: "secret\n"}
	code := Main("models", []string{"--url", srv.URL}, NewIO(nil, &out, &errb, func(k string) string { return env[k] }))
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
