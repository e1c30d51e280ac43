package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeBatchConfig writes a config of three 4000 MiB stand-in models, two
// of which fit the budget, under the batch policy; extra are stand-in flags.
func writeBatchConfig(t *testing.T, engine string, extra ...string) e2eSetup {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	var ms strings.Builder
	for _, name := range []string{"alpha", "beta", "gamma"} {
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		args, _ := json.Marshal(append([]string{"--test-load-delay", "50ms"}, extra...))
		fmt.Fprintf(&ms, "    - name: %s\n      model_path: %s\n      vram_mb: 4000\n      config: {parallel: 4, context_size: 512, extra_args: %s}\n", name, path, args)
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: batch, max_wait_seconds: 5, max_attempts: 5}
logging: {level: info, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), engine, ms.String())
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e2eSetup{dir: dir, cfg: path, port: port}
}

// batchInput is n chat lines over the three models; line k asks "question k".
func batchInput(n int) []byte {
	var b bytes.Buffer
	models := []string{"alpha", "beta", "gamma"}
	for k := range n {
		fmt.Fprintf(&b, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"question %d"}]}}`+"\n",
			k, models[k%3], k)
	}
	return b.Bytes()
}

// upload posts content to /v1/files and returns the file's id.
func (d *daemon) upload(content []byte, purpose string) (int, map[string]any) {
	d.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "input.jsonl")
	_, _ = fw.Write(content)
	_ = mw.WriteField("purpose", purpose)
	_ = mw.Close()
	resp, err := http.Post(d.url+"/v1/files", mw.FormDataContentType(), &body)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

type e2eBatch struct {
	ID            string                                 `json:"id"`
	Status        string                                 `json:"status"`
	OutputFileID  string                                 `json:"output_file_id"`
	ErrorFileID   string                                 `json:"error_file_id"`
	RequestCounts struct{ Total, Completed, Failed int } `json:"request_counts"`
	Errors        *struct {
		Data []struct {
			Code, Message string
			Line          int
		}
	}
}

func (d *daemon) createBatch(content []byte) e2eBatch {
	d.t.Helper()
	code, f := d.upload(content, "batch")
	if code != http.StatusOK {
		d.t.Fatalf("upload: %d %v", code, f)
	}
	var b e2eBatch
	if code := d.do("POST", "/v1/batches", map[string]any{"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
		"completion_window": "24h"}, &b); code != http.StatusOK {
		d.t.Fatalf("create batch: %d %+v", code, b)
	}
	return b
}

// waitBatch polls the batch until cond holds.
func (d *daemon) waitBatch(id string, timeout time.Duration, cond func(e2eBatch) bool) e2eBatch {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var b e2eBatch
		d.do("GET", "/v1/batches/"+id, nil, &b)
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("batch %s: condition not met after %v: %+v", id, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type e2eOutLine struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int `json:"status_code"`
		Body       struct {
			Choices []struct {
				Message struct{ Content string }
			}
		}
	}
	Error *struct{ Code, Message string }
}

func (d *daemon) fileLines(id string) []e2eOutLine {
	d.t.Helper()
	if id == "" {
		return nil
	}
	resp, err := http.Get(d.url + "/v1/files/" + id + "/content")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []e2eOutLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l e2eOutLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			d.t.Fatalf("output line %q: %v", sc.Bytes(), err)
		}
		out = append(out, l)
	}
	return out
}

// checkOutput checks that each of n lines appears once across the output
// and error files, a completed one with its own answer; it returns how
// many were answered.
func checkOutput(t *testing.T, out, errs []e2eOutLine, n int) int {
	t.Helper()
	seen := map[string]int{}
	for _, l := range out {
		seen[l.CustomID]++
		var k int
		fmt.Sscanf(l.CustomID, "req-%d", &k)
		if l.Response == nil || l.Response.StatusCode != 200 || len(l.Response.Body.Choices) == 0 ||
			l.Response.Body.Choices[0].Message.Content != fmt.Sprintf("echo: question %d", k) {
			t.Fatalf("line %s: %+v", l.CustomID, l.Response)
		}
	}
	for _, l := range errs {
		seen[l.CustomID]++
		if l.Error == nil {
			t.Fatalf("error line %s without error", l.CustomID)
		}
	}
	for k := range n {
		if c := seen[fmt.Sprintf("req-%d", k)]; c != 1 {
			t.Fatalf("req-%d appears %d times", k, c)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d custom ids in the output, want %d", len(seen), n)
	}
	return len(out)
}

func TestE2E_BatchBadLineFailsValidation(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeBatchConfig(t, engine)
	d := startOAIDaemon(t, bin, s)
	in := batchInput(5)
	lines := bytes.SplitAfter(in, []byte("\n"))
	lines[3] = []byte(`{"custom_id":"req-3","method":"POST","url":"/v1/embeddings","body":{"model":"alpha"}}` + "\n")
	b := d.createBatch(bytes.Join(lines, nil))
	b = d.waitBatch(b.ID, 30*time.Second, func(b e2eBatch) bool { return b.Status != "validating" })
	if b.Status != "failed" || b.Errors == nil || len(b.Errors.Data) != 1 || b.Errors.Data[0].Line != 4 {
		t.Fatalf("batch with a bad line 4: %+v", b)
	}
	if code, out := d.upload(in, "fine-tune"); code != http.StatusBadRequest {
		t.Fatalf("purpose fine-tune: %d %v", code, out)
	}
}

func TestE2E_BatchCancelKeepsPartialOutput(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeBatchConfig(t, engine, "--test-token-delay", "200ms")
	d := startOAIDaemon(t, bin, s)
	b := d.createBatch(batchInput(60))
	d.waitBatch(b.ID, 60*time.Second, func(b e2eBatch) bool { return b.RequestCounts.Completed >= 3 })
	var c e2eBatch
	if code := d.do("POST", "/v1/batches/"+b.ID+"/cancel", nil, &c); code != http.StatusOK || c.Status != "cancelling" {
		t.Fatalf("cancel: %d %+v", code, c)
	}
	b = d.waitBatch(b.ID, 60*time.Second, func(b e2eBatch) bool { return b.Status != "cancelling" })
	if b.Status != "cancelled" {
		t.Fatalf("after cancel: %+v", b)
	}
	out, errs := d.fileLines(b.OutputFileID), d.fileLines(b.ErrorFileID)
	done := checkOutput(t, out, errs, 60)
	if done < 3 || done == 60 || done != b.RequestCounts.Completed {
		t.Fatalf("partial output: %d lines answered, counts %+v", done, b.RequestCounts)
	}
}

// TestE2E_BatchSurvivesKillNine kills the daemon three times while a
// 500-line batch runs; after the last restart the batch completes with
// every line exactly once.
func TestE2E_BatchSurvivesKillNine(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeBatchConfig(t, engine, "--test-token-delay", "10ms")
	d := startDaemon(t, bin, s.cfg, s.port)
	const n = 500
	b := d.createBatch(batchInput(n))
	for kill := range 3 {
		goal := (kill + 1) * n / 5
		at := d.waitBatch(b.ID, 60*time.Second, func(b e2eBatch) bool { return b.RequestCounts.Completed >= goal })
		if at.Status != "in_progress" {
			t.Fatalf("kill %d: the batch is already %s", kill+1, at.Status)
		}
		d.signal(syscall.SIGKILL, 10*time.Second)
		d = startDaemon(t, bin, s.cfg, s.port)
	}
	b = d.waitBatch(b.ID, 3*time.Minute, func(b e2eBatch) bool { return b.Status == "completed" })
	if b.RequestCounts.Total != n || b.RequestCounts.Completed != n || b.RequestCounts.Failed != 0 {
		t.Fatalf("counts: %+v", b.RequestCounts)
	}
	if got := checkOutput(t, d.fileLines(b.OutputFileID), d.fileLines(b.ErrorFileID), n); got != n {
		t.Fatalf("%d answered lines, want %d", got, n)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
}

// TestE2E_BatchNodeClient runs scripts/openai-client/batch.mjs: the official
// openai client uploads 300 lines over three models (two fit at once),
// creates the batch, polls it and checks the output.
func TestE2E_BatchNodeClient(t *testing.T) {
	bin, engine := buildBinaries(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the official openai client cannot run (.ci/run installs it)")
	}
	if _, err := os.Stat("scripts/openai-client/node_modules/openai/package.json"); err != nil {
		t.Skip("scripts/openai-client/node_modules is missing: run npm ci there (.ci/run does)")
	}
	s := writeBatchConfig(t, engine)
	d := startOAIDaemon(t, bin, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "scripts/openai-client/batch.mjs", "--base-url", d.url+"/v1",
		"--models", "alpha,beta,gamma", "--lines", "300")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("openai client: %v", err)
	}
}

// TestE2E_BatchCLI runs vramcram batch submit --wait, status, ls and output
// against the daemon.
func TestE2E_BatchCLI(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeBatchConfig(t, engine, "--test-token-delay", "5ms")
	d := startOAIDaemon(t, bin, s)
	in := filepath.Join(s.dir, "in.jsonl")
	if err := os.WriteFile(in, batchInput(40), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(s.dir, "out.jsonl")
	code, stdout, stderr := d.run("batch", "submit", in, "--endpoint", "/v1/chat/completions", "--wait", "--poll", "100ms", "-o", out)
	if code != 0 {
		t.Fatalf("batch submit: %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "40/40 done, 0 failed") || !strings.Contains(stderr, "lines/s, ETA") {
		t.Fatalf("no progress on stderr:\n%s", stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var lines []e2eOutLine
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var ol e2eOutLine
		if err := json.Unmarshal(l, &ol); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		lines = append(lines, ol)
	}
	checkOutput(t, lines, nil, 40)
	code, stdout, _ = d.run("batch", "ls")
	if code != 0 || !strings.Contains(stdout, "completed") {
		t.Fatalf("batch ls: %d %s", code, stdout)
	}
	id := strings.Fields(strings.Split(stdout, "\n")[1])[0]
	if code, stdout, _ = d.run("batch", "status", id); code != 0 || !strings.Contains(stdout, "40/40 done") {
		t.Fatalf("batch status: %d %s", code, stdout)
	}
	if code, stdout, _ = d.run("batch", "output", id); code != 0 || strings.Count(stdout, "\n") != 40 {
		t.Fatalf("batch output: %d %d lines", code, strings.Count(stdout, "\n"))
	}
	if code, _, stderr = d.run("batch", "cancel", id); code != 1 || !strings.Contains(stderr, "can no longer be cancelled") {
		t.Fatalf("cancel a completed batch: %d %s", code, stderr)
	}
}
