package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2E_Logs follows a model's engine output with `vramcram logs -f` and
// sees the line the stand-in prints for a request sent after the command
// started (llama-server's "log_server_r: done request"), and reads the
// daemon's own log lines with `vramcram logs`.
func TestE2E_Logs(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)

	if code, _, stderr := d.run("logs", "alpha"); code != 1 || !strings.Contains(stderr, "has not run since the daemon started") {
		t.Fatalf("logs of a model never loaded: exit %d, %q", code, stderr)
	}
	id := d.submit("alpha", "warm up")
	if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
		t.Fatalf("job: %+v", js)
	}

	var out, errb writeLog
	exited := make(chan int, 1)
	go func() { exited <- d.cli(&out, &errb, nil, "logs", "-f", "alpha") }()
	// The recent output comes first: the command is following once it shows.
	waitFor(t, func() string {
		if strings.Contains(out.String(), "model loaded") {
			return "ok"
		}
		return ""
	})
	const marker = "log_server_r: done request: POST /v1/chat/completions"
	if strings.Contains(out.String(), marker) {
		t.Fatalf("the chat line is there before the chat:\n%s", out.String())
	}
	resp, err := http.Post(d.url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"alpha","messages":[{"role":"user","content":"are you there"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, func() string {
		if strings.Contains(out.String(), marker) {
			return "ok"
		}
		return ""
	})
	// The engine exits: the following ends by itself.
	if code, _, stderr := d.run("unload", "--wait", "alpha"); code != 0 {
		t.Fatalf("unload: %d %s", code, stderr)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("logs -f exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f still running after the engine exited")
	}
	// After it exited, its last lines are still there.
	if code, stdout, _ := d.run("logs", "-n", "3", "alpha"); code != 0 || strings.Count(stdout, "\n") != 3 {
		t.Fatalf("logs -n 3 of the stopped engine: exit %d:\n%s", code, stdout)
	}

	code, stdout, stderr := d.run("logs")
	if code != 0 || !strings.Contains(stdout, `msg="vramcram listening"`) || !strings.Contains(stdout, `msg="model ready"`) {
		t.Fatalf("daemon logs: exit %d, %s\n%s", code, stderr, stdout)
	}
}
