package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkProxyOverhead measures what VramCram adds to a request: the same
// non-streaming request goes straight to a loaded stand-in engine and
// through VramCram, interleaved (so both see the same machine load), each
// over its own keep-alive connection: a chat through /v1/chat/completions
// (sub-benchmark chat) and an Anthropic message through the passthrough
// /v1/messages (messages). It reports the p50 and p99 latency of each path
// and the difference. Binaries are built without the race detector.
//
//	go test -run '^$' -bench ProxyOverhead -benchtime 5000x ./e2e
func BenchmarkProxyOverhead(b *testing.B) {
	if testing.Short() {
		b.Skip("builds and starts the daemon")
	}
	dir := b.TempDir()
	bin, engine := buildPlain(b)
	model := filepath.Join(dir, "bench.gguf")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		b.Fatal(err)
	}
	port := freePortB(b)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 8000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
logging: {level: warn, format: json}
models:
  llm:
    - {name: bench, model_path: %s, vram_mb: 4000, config: {parallel: 2, context_size: 512}}
`, port, filepath.Join(dir, "data"), engine, model)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	const body = `{"model":"bench","messages":[{"role":"user","content":"hello world"}],"max_tokens":8}`
	const chatPath = "/v1/chat/completions"
	viaVC := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	// The first request loads the model.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := postOnce(viaVC, base, chatPath, body); err == nil {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("VramCram does not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	enginePath := ""
	for pid := range engineProcs(engine) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), model) {
			args := strings.Split(string(b), "\x00")
			if i := slices.Index(args, "--port"); i >= 0 && i+1 < len(args) {
				enginePath = "http://127.0.0.1:" + args[i+1]
			}
		}
	}
	if enginePath == "" {
		b.Fatal("no engine found")
	}
	for _, r := range []struct{ name, path string }{{"chat", chatPath}, {"messages", "/v1/messages"}} {
		b.Run(r.name, func(b *testing.B) {
			benchOverhead(b, direct, viaVC, enginePath, base, r.path, body)
		})
	}
}

// benchOverhead compares body posted to path straight to the engine and
// through VramCram.
func benchOverhead(b *testing.B, direct, viaVC *http.Client, enginePath, base, path, body string) {
	// Warm both connections.
	for range 200 {
		if _, err := postOnce(direct, enginePath, path, body); err != nil {
			b.Fatal(err)
		}
		if _, err := postOnce(viaVC, base, path, body); err != nil {
			b.Fatal(err)
		}
	}

	var dLat, vLat []time.Duration
	i := 0
	for b.Loop() {
		// Alternate which path goes first so neither always follows the other.
		order := []bool{i%2 == 0, i%2 != 0}
		i++
		for _, viaFirst := range order {
			c, u, lat := direct, enginePath, &dLat
			if viaFirst {
				c, u, lat = viaVC, base, &vLat
			}
			d, err := postOnce(c, u, path, body)
			if err != nil {
				b.Fatal(err)
			}
			*lat = append(*lat, d)
		}
	}
	b.StopTimer()
	pct := func(l []time.Duration, p float64) float64 {
		s := slices.Clone(l)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(float64(len(s))*p))].Microseconds())
	}
	dp50, dp99, vp50, vp99 := pct(dLat, 0.50), pct(dLat, 0.99), pct(vLat, 0.50), pct(vLat, 0.99)
	b.ReportMetric(dp50, "direct-p50-µs")
	b.ReportMetric(dp99, "direct-p99-µs")
	b.ReportMetric(vp50, "vramcram-p50-µs")
	b.ReportMetric(vp99, "vramcram-p99-µs")
	b.ReportMetric(vp50-dp50, "added-p50-µs")
	b.ReportMetric(vp99-dp99, "added-p99-µs")
}

// postOnce sends one request and reads the whole answer.
func postOnce(c *http.Client, base, path, body string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Post(base+path, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return d, nil
}

func freePortB(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
