package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestE2E_TokenFigures runs a job and two interactive chats (one streamed)
// through the stand-in, which reports usage and timings as llama-server
// does, and checks the token counters, the speed histogram, the job's stored
// usage, /models and `vramcram ps`.
func TestE2E_TokenFigures(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	mport := freePort(t)
	d := startDaemon(t, bin, s.cfg, s.port, fmt.Sprintf("VRAMCRAM_SERVER__METRICS_PORT=%d", mport))
	stopAtCleanup(t, d)
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)

	id := d.submit("alpha", "one two three") // 3 prompt words; "echo: one two three": 4 generated
	if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
		t.Fatalf("job: %+v", js)
	}
	var result map[string]any
	d.do("GET", "/jobs/"+id+"/result", nil, &result)
	usage, _ := result["usage"].(map[string]any)
	if usage["prompt_tokens"] != 3.0 || usage["completion_tokens"] != 4.0 || result["timings"] == nil {
		t.Fatalf("job result carries no usage and timings: %v", result)
	}
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"alpha","stream":%v,"messages":[{"role":"user","content":"hi there"}]}`, stream)
		resp, err := http.Post(d.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "there") {
			t.Fatalf("chat (stream %v): %d %s", stream, resp.StatusCode, b)
		}
	}
	// Each chat: "hi there" is 2 prompt tokens, "echo: hi there" 3 generated.
	var text string
	waitFor(t, func() string {
		text = scrapeMetrics(t, murl)
		if v, _ := sumSeries(text, "vramcram_generated_tokens_total", `model="alpha"`); v == 4+3+3 {
			return "ok"
		}
		return ""
	})
	if v, _ := sumSeries(text, "vramcram_prompt_tokens_total", `model="alpha"`); v != 3+2+2 {
		t.Errorf("vramcram_prompt_tokens_total{alpha} = %v, want 7\n%s", v, text)
	}
	if v, _ := sumSeries(text, "vramcram_generation_tokens_per_second_count", `model="alpha"`); v != 3 {
		t.Errorf("tokens/s observations for alpha = %v, want 3", v)
	}
	if v, _ := sumSeries(text, "vramcram_generated_tokens_total", `model="beta"`); v != 0 {
		t.Errorf("beta generated %v tokens, want 0", v)
	}

	var models struct {
		Models []struct {
			Name            string
			TokensPerSecond float64 `json:"tokens_per_second"`
		}
	}
	d.do("GET", "/models", nil, &models)
	if models.Models[0].Name != "alpha" || models.Models[0].TokensPerSecond <= 0 {
		t.Fatalf("/models gives no tokens/s for alpha: %+v", models.Models)
	}
	code, stdout, _ := d.run("ps")
	if code != 0 || !regexp.MustCompile(`(?m)^NAME .*TOK/S`).MatchString(stdout) ||
		!regexp.MustCompile(`(?m)^alpha\s+ready\s+0\s+4000 MiB\s+-\s+0/2\s+\d+\.\d\s`).MatchString(stdout) {
		t.Fatalf("ps shows no tokens/s for alpha: exit %d\n%s", code, stdout)
	}
	t.Logf("vramcram ps:\n%s", stdout)
}
