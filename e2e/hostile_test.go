package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Hostile input against the running daemon: the limits the HTTP server and
// the API enforce before anything reaches the store.
func TestE2E_HostileInput(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 10000, "policy: batch, max_queue: 3",
		schedModel{name: "slow", mb: 4000, slots: 1, engine: []string{"--test-token-delay", "50ms"}})
	d := startDaemon(t, bin, s.cfg, s.port)

	// Headers beyond 64 KiB: 431 from the HTTP server.
	req, _ := http.NewRequest("GET", d.url+"/health", nil)
	req.Header.Set("X-Junk", strings.Repeat("a", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("long header: %d, want 431", resp.StatusCode)
	}

	// A body beyond server.max_body_bytes (default 1 MiB): 413 with a JSON code.
	big := `{"model":"slow","prompt":"` + strings.Repeat("x", 2<<20) + `"}`
	resp, err = http.Post(d.url+"/jobs", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"body_too_large"`) {
		t.Fatalf("huge body: %d %s", resp.StatusCode, b)
	}

	// The queue holds max_queue jobs; the next submission gets 429 and
	// Retry-After, and nothing accepted is lost.
	running := d.submit("slow", words(200))
	d.waitRunning(running)
	var queued []string
	for range 3 {
		queued = append(queued, d.submit("slow", "wait"))
	}
	resp, err = http.Post(d.url+"/jobs", "application/json", strings.NewReader(`{"model":"slow","prompt":"one too many"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"queue_full"`) {
		t.Fatalf("full queue: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	d.do("DELETE", "/jobs/"+running, nil, nil)
	for _, id := range queued {
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("queued job: %+v", js)
		}
	}
}
