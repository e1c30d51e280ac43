package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkBatch10k runs one OpenAI batch of 10,000 chat lines spread over
// three stand-in models that take 2 s to load, of which two fit at once, and
// reports the engine loads (goal: at most models + 2 = 5), the lines per
// second from create to completed, and the daemon's peak RSS (VmHWM; goal:
// under 100 MB). Binaries are built without the race detector.
//
//	go test -run '^$' -bench Batch10k -benchtime 1x ./e2e
func BenchmarkBatch10k(b *testing.B) {
	if testing.Short() {
		b.Skip("builds and starts the daemon")
	}
	const lines = 10_000
	dir := b.TempDir()
	bin, engine := buildPlain(b)
	var ms strings.Builder
	for _, name := range []string{"alpha", "beta", "gamma"} {
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&ms, "    - {name: %s, model_path: %s, vram_mb: 4000, config: {parallel: 4, context_size: 512, extra_args: [--test-load-delay, 2s]}}\n", name, path)
	}
	port := freePortB(b)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
scheduling: {policy: batch, max_queue: 20000}
logging: {level: info, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), engine, ms.String())
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	benchWaitHealthy(b, base)

	var in bytes.Buffer
	models := []string{"alpha", "beta", "gamma"}
	for k := range lines {
		fmt.Fprintf(&in, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"max_tokens":4,"messages":[{"role":"user","content":"question %d"}]}}`+"\n",
			k, models[k%3], k)
	}
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		fileID := benchUpload(b, base, in.Bytes())
		id := benchCreate(b, base, fileID)
		for {
			var bt struct {
				Status        string                          `json:"status"`
				RequestCounts struct{ Completed, Failed int } `json:"request_counts"`
			}
			benchGet(b, base+"/v1/batches/"+id, &bt)
			if bt.Status == "completed" {
				if bt.RequestCounts.Completed != lines {
					b.Fatalf("completed %d of %d lines", bt.RequestCounts.Completed, lines)
				}
				break
			}
			if bt.Status == "failed" || bt.Status == "cancelled" || bt.Status == "expired" {
				b.Fatalf("batch %s", bt.Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.ReportMetric(float64(lines)/time.Since(start).Seconds(), "lines/s")
	}
	b.StopTimer()
	b.ReportMetric(float64(strings.Count(logs.String(), `"msg":"loading model"`)), "loads")
	b.ReportMetric(float64(peakRSSKB(b, cmd.Process.Pid))/1024, "peak-RSS-MB")
}

func benchWaitHealthy(b *testing.B, base string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("daemon not healthy after 60 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchUpload(b *testing.B, base string, content []byte) string {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "bench.jsonl")
	_, _ = fw.Write(content)
	_ = mw.Close()
	resp, err := http.Post(base+"/v1/files", mw.FormDataContentType(), &body)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var f struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil || f.ID == "" {
		b.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	return f.ID
}

func benchCreate(b *testing.B, base, fileID string) string {
	req := fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, fileID)
	resp, err := http.Post(base+"/v1/batches", "application/json", strings.NewReader(req))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var bt struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&bt); err != nil || bt.ID == "" {
		b.Fatalf("create batch: %d %v", resp.StatusCode, err)
	}
	return bt.ID
}

func benchGet(b *testing.B, url string, out any) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
}

// peakRSSKB reads a process's peak resident set size (VmHWM) in KiB.
func peakRSSKB(b *testing.B, pid int) int {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read peak RSS: %v", err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}
