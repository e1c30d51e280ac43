package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// raw sends one request with explicit headers ("Host" sets the Host) and
// returns the status, headers and body.
func (d *daemon) raw(method, path, body string, hdr ...string) (int, http.Header, string) {
	d.t.Helper()
	req, _ := http.NewRequest(method, d.url+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// The default daemon (loopback, no keys) against a hostile web page and
// hostile clients: DNS rebinding, CSRF, 431 in JSON, the /v1 prompt limit,
// and the line of waiting requests bounded by scheduling.max_queue.
func TestE2E_BrowserGuardsAndLimits(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 10000, "policy: batch, max_queue: 2",
		schedModel{name: "slow", mb: 4000, slots: 1, engine: []string{"--test-token-delay", "50ms"}})
	d := startDaemon(t, bin, s.cfg, s.port)

	// DNS rebinding: Host names attacker.example.
	code, _, body := d.raw("GET", "/jobs", "", "Host", "attacker.example:8000")
	if code != http.StatusForbidden || !strings.Contains(body, `"forbidden_host"`) {
		t.Fatalf("foreign Host: %d %s", code, body)
	}
	// CSRF: a text/plain POST and an unload from a foreign page.
	code, _, body = d.raw("POST", "/jobs", `{"model":"slow","prompt":"hi"}`, "Content-Type", "text/plain", "Origin", "http://attacker.example")
	if code != http.StatusForbidden || !strings.Contains(body, `"forbidden_origin"`) {
		t.Fatalf("cross-origin submit: %d %s", code, body)
	}
	code, _, body = d.raw("POST", "/models/slow/unload", "", "Origin", "http://attacker.example")
	if code != http.StatusForbidden {
		t.Fatalf("cross-origin unload: %d %s", code, body)
	}
	var list struct{ Jobs []any }
	if d.do("GET", "/jobs", nil, &list); len(list.Jobs) != 0 {
		t.Fatalf("foreign requests queued %d jobs", len(list.Jobs))
	}
	// curl's way (-d without a type) still works.
	code, _, body = d.raw("POST", "/jobs", `{"model":"slow","prompt":"hi"}`, "Content-Type", "application/x-www-form-urlencoded")
	if code != http.StatusAccepted {
		t.Fatalf("curl -d: %d %s", code, body)
	}
	// net/http's own 431, in JSON.
	code, hdr, body := d.raw("GET", "/health", "", "X-Junk", strings.Repeat("a", 100<<10))
	if code != http.StatusRequestHeaderFieldsTooLarge || hdr.Get("Content-Type") != "application/json" || !strings.Contains(body, `"headers_too_large"`) {
		t.Fatalf("long header: %d %q %s", code, hdr.Get("Content-Type"), body)
	}
	// 300,000 characters on /v1/: server.max_prompt_chars (100,000).
	long, _ := json.Marshal(map[string]any{"model": "slow", "messages": []map[string]string{{"role": "user", "content": strings.Repeat("x", 300_000)}}})
	code, _, body = d.raw("POST", "/v1/chat/completions", string(long), "Content-Type", "application/json")
	if code != http.StatusBadRequest || !strings.Contains(body, "server.max_prompt_chars") || !strings.Contains(body, `"param":"messages"`) {
		t.Fatalf("long /v1 prompt: %d %.300s", code, body)
	}

	// The line: the only slot busy, two requests waiting fill max_queue 2;
	// the next request, and the next job, get 429 with Retry-After.
	running := d.submit("slow", words(400))
	d.waitRunning(running)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chat := `{"model":"slow","messages":[{"role":"user","content":"hi"}]}`
	waited := make(chan error, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/chat/completions", strings.NewReader(chat))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			waited <- err
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var h struct {
			QueueDepth int `json:"queue_depth"`
		}
		d.do("GET", "/health", nil, &h)
		if h.QueueDepth == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want 2 waiting requests", h.QueueDepth)
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, hdr, body = d.raw("POST", "/v1/chat/completions", chat, "Content-Type", "application/json")
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(body, `"rate_limit_error"`) || !strings.Contains(body, `"queue_full"`) {
		t.Fatalf("third waiting request: %d Retry-After %q %s", code, hdr.Get("Retry-After"), body)
	}
	code, hdr, body = d.raw("POST", "/jobs", `{"model":"slow","prompt":"one more"}`, "Content-Type", "application/json")
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(body, `"queue_full"`) {
		t.Fatalf("job with the line full: %d %s", code, body)
	}
	cancel()
	for range 2 {
		<-waited
	}
	d.do("DELETE", "/jobs/"+running, nil, nil)
}
