package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// oaiModel is one model of an OpenAI end-to-end config.
type oaiModel struct {
	name       string
	parallel   int
	embeddings bool
	extra      []string // stand-in flags
	aliases    []string
}

// writeOAIConfig writes a config of 4000 MiB stand-in models under a budget
// of budgetMB, with API keys if any.
func writeOAIConfig(t *testing.T, engine string, budgetMB int, apiKeys []string, models ...oaiModel) e2eSetup {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	sizes := map[string]int{}
	var ms strings.Builder
	for _, m := range models {
		path := filepath.Join(dir, m.name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		sizes[m.name] = 4000
		args, _ := json.Marshal(append([]string{"--test-load-delay", "50ms"}, m.extra...))
		aliases, _ := json.Marshal(append([]string{}, m.aliases...))
		fmt.Fprintf(&ms, "    - name: %s\n      aliases: %s\n      model_path: %s\n      vram_mb: 4000\n      config: {parallel: %d, context_size: 512, embeddings: %v, extra_args: %s}\n",
			m.name, aliases, path, max(m.parallel, 1), m.embeddings, args)
	}
	keys, _ := json.Marshal(apiKeys)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0, api_keys: %s}
storage: {data_dir: %s}
vram: {total_mb: %d, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: fifo, max_attempts: 3}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, keys, filepath.Join(dir, "data"), budgetMB+1000, engine, ms.String())
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e2eSetup{dir: dir, cfg: path, port: port, sizes: sizes, budget: budgetMB}
}

// post sends a JSON body and returns the response (the caller closes it).
func (d *daemon) post(ctx context.Context, path, body string) *http.Response {
	d.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// postJSON posts body and decodes the answer into out; it returns the status.
func (d *daemon) postJSON(path, body string, out any) int {
	d.t.Helper()
	resp := d.post(context.Background(), path, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		d.t.Fatalf("POST %s: %d %s: %v", path, resp.StatusCode, b, err)
	}
	return resp.StatusCode
}

// sseData reads the next "data: " payload of an event stream.
func sseData(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok {
			return data
		}
	}
}

// readChatStream reads an OpenAI chat or completion stream to [DONE] and
// returns the text, the number of chunks and the last finish_reason.
func readChatStream(t *testing.T, r *bufio.Reader) (string, int, string) {
	t.Helper()
	var text strings.Builder
	chunks, finish := 0, ""
	for {
		data := sseData(t, r)
		if data == "[DONE]" {
			return text.String(), chunks, finish
		}
		var c struct {
			Choices []struct {
				Delta        struct{ Content *string }
				Text         *string
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		chunks++
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
			if ch.Text != nil {
				text.WriteString(*ch.Text)
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
}

func chatBody(model, content string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"model": model, "stream": stream, "messages": []map[string]string{{"role": "user", "content": content}}})
	return string(b)
}

// waitEvent polls the event log until an event matches.
func waitEvent(t *testing.T, el *eventLog, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		el.mu.Lock()
		for _, ev := range el.events {
			if match(ev) {
				el.mu.Unlock()
				return ev
			}
		}
		el.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no event: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestE2E_OpenAIRoutes(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeOAIConfig(t, engine, 9000, nil,
		oaiModel{name: "alpha", parallel: 2, embeddings: true, extra: []string{"--test-token-delay", "1ms"}},
		oaiModel{name: "beta", parallel: 2, extra: []string{"--test-token-delay", "1ms"}})
	d := startOAIDaemon(t, bin, s)
	events := followEvents(t, d.url, s.sizes, s.budget)

	var list struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if code := d.do("GET", "/v1/models", nil, &list); code != 200 || list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "alpha" || list.Data[1].ID != "beta" {
		t.Fatalf("GET /v1/models: %d %+v", code, list)
	}

	t.Run("Chat", func(t *testing.T) {
		var out struct {
			Model, Object string
			Choices       []struct {
				Message      struct{ Role, Content string }
				FinishReason string `json:"finish_reason"`
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		code := d.postJSON("/v1/chat/completions", chatBody("alpha", "hello world", false), &out)
		if code != 200 || out.Model != "alpha" || out.Object != "chat.completion" || len(out.Choices) != 1 ||
			out.Choices[0].Message.Content != "echo: hello world" || out.Choices[0].FinishReason != "stop" || out.Usage.CompletionTokens != 3 {
			t.Fatalf("chat: %d %+v", code, out)
		}
	})
	t.Run("ChatStream", func(t *testing.T) {
		resp := d.post(context.Background(), "/v1/chat/completions", chatBody("alpha", "hello streamed world", true))
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d %v", resp.StatusCode, resp.Header)
		}
		text, chunks, finish := readChatStream(t, bufio.NewReader(resp.Body))
		if text != "echo: hello streamed world" || chunks < 4 || finish != "stop" {
			t.Fatalf("stream %q in %d chunks, finish %q", text, chunks, finish)
		}
	})
	t.Run("Completion", func(t *testing.T) {
		var out struct {
			Model   string
			Choices []struct{ Text string }
		}
		if code := d.postJSON("/v1/completions", `{"model":"beta","prompt":"one two three","max_tokens":2}`, &out); code != 200 ||
			out.Model != "beta" || len(out.Choices) != 1 || out.Choices[0].Text != "echo: one" {
			t.Fatalf("completion: %d %+v", code, out)
		}
		resp := d.post(context.Background(), "/v1/completions", `{"model":"beta","prompt":"one two three","stream":true}`)
		defer resp.Body.Close()
		if text, _, finish := readChatStream(t, bufio.NewReader(resp.Body)); text != "echo: one two three" || finish != "stop" {
			t.Fatalf("streamed completion %q %q", text, finish)
		}
	})
	t.Run("Embeddings", func(t *testing.T) {
		var out struct {
			Object string
			Data   []struct {
				Embedding []float64
				Index     int
			}
		}
		if code := d.postJSON("/v1/embeddings", `{"model":"alpha","input":["a","b"]}`, &out); code != 200 || len(out.Data) != 2 || len(out.Data[1].Embedding) != 16 || out.Data[1].Index != 1 {
			t.Fatalf("embeddings: %d %+v", code, out)
		}
		var e struct {
			Error struct{ Code, Param, Type string }
		}
		if code := d.postJSON("/v1/embeddings", `{"model":"beta","input":"a"}`, &e); code != 400 || e.Error.Code != "model_not_supported" || e.Error.Param != "model" {
			t.Fatalf("embeddings of beta: %d %+v", code, e)
		}
	})
	t.Run("UnknownModel", func(t *testing.T) {
		var e struct {
			Error struct{ Code, Param, Type, Message string }
		}
		if code := d.postJSON("/v1/chat/completions", chatBody("gamma", "x", false), &e); code != 404 ||
			e.Error.Code != "model_not_found" || e.Error.Type != "invalid_request_error" || e.Error.Param != "model" || !strings.Contains(e.Error.Message, "gamma") {
			t.Fatalf("unknown model: %d %+v", code, e)
		}
	})
	// Each request was an interactive job on the bus.
	fin := waitEvent(t, events, "an interactive job finished", func(ev map[string]any) bool {
		id, _ := ev["job_id"].(string)
		return ev["type"] == "job_finished" && strings.HasPrefix(id, "chat-") && ev["state"] == "completed"
	})
	t.Logf("interactive job on the bus: %v", fin)

	t.Run("JobStream", func(t *testing.T) {
		prompt := strings.TrimSpace(strings.Repeat("many words here ", 40))
		id := d.submit("alpha", prompt)
		resp, err := http.Get(d.url + "/jobs/" + id + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, status := readJobStream(t, bufio.NewReader(resp.Body))
		if status != "completed" || text != d.resultText(id) || text != "echo: "+prompt {
			t.Fatalf("job stream %q (%s), result %q", text, status, d.resultText(id))
		}
	})
	t.Run("JobStreamAttachedLate", func(t *testing.T) {
		slow := writeOAIConfig(t, engine, 9000, nil, oaiModel{name: "slow", extra: []string{"--test-token-delay", "20ms"}})
		d2 := startOAIDaemon(t, bin, slow)
		prompt := strings.TrimSpace(strings.Repeat("slow words ", 20))
		id := d2.submit("slow", prompt)
		deadline := time.Now().Add(30 * time.Second)
		for { // until it has generated a few chunks
			var js struct{ Progress struct{ Tokens int } }
			d2.do("GET", "/jobs/"+id, nil, &js)
			if js.Progress.Tokens >= 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("job made no progress")
			}
			time.Sleep(5 * time.Millisecond)
		}
		resp, err := http.Get(d2.url + "/jobs/" + id + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		first := jobMsg(t, r)
		if first.Type != "token" || len(strings.Fields(first.Text)) < 3 || first.Tokens < 3 {
			t.Fatalf("first message %+v: want the text so far", first)
		}
		rest, status := readJobStream(t, r)
		if status != "completed" || first.Text+rest != d2.resultText(id) {
			t.Fatalf("late stream %q + %q (%s), result %q", first.Text, rest, status, d2.resultText(id))
		}
	})
	t.Run("WebSocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(d.url, "http")+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		send := func(v any) {
			b, _ := json.Marshal(v)
			if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
				t.Fatal(err)
			}
		}
		send(map[string]any{"type": "subscribe", "id": "ev"})
		send(map[string]any{"type": "submit", "id": "j", "model": "beta", "prompt": "over the socket", "stream": true})
		var text strings.Builder
		var jobID, status string
		sawEvent := false
		for status == "" {
			_, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Type, ID, Text, Status string
				JobID                  string `json:"job_id"`
				Event                  *struct{ Type string }
			}
			_ = json.Unmarshal(b, &m)
			switch m.Type {
			case "submitted":
				jobID = m.JobID
			case "token":
				text.WriteString(m.Text)
			case "done":
				status = m.Status
			case "event":
				sawEvent = sawEvent || m.Event.Type == "job_queued"
			case "error":
				t.Fatalf("error %s", b)
			}
		}
		if status != "completed" || text.String() != "echo: over the socket" || text.String() != d.resultText(jobID) || !sawEvent {
			t.Fatalf("ws: %q %s, event seen %v", text.String(), status, sawEvent)
		}
		_ = conn.Close(websocket.StatusNormalClosure, "")
	})
}

// jobStreamMsg is a message of GET /jobs/{id}/stream.
type jobStreamMsg struct {
	Type, Text, Status, Error string
	Tokens                    int
}

func jobMsg(t *testing.T, r *bufio.Reader) jobStreamMsg {
	t.Helper()
	var m jobStreamMsg
	if err := json.Unmarshal([]byte(sseData(t, r)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// readJobStream reads a job stream to done: the text and the final status.
func readJobStream(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var text strings.Builder
	for {
		m := jobMsg(t, r)
		switch m.Type {
		case "token":
			text.WriteString(m.Text)
		case "reset":
			text.Reset()
		case "done":
			return text.String(), m.Status
		}
	}
}

// enginePort finds the --port of the live stand-in engine of modelPath.
func enginePort(t *testing.T, engine, modelPath string) int {
	t.Helper()
	for pid := range engineProcs(engine) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(b), "\x00")
		if !slices.Contains(args, modelPath) {
			continue
		}
		for i, a := range args {
			if a == "--port" && i+1 < len(args) {
				p, _ := strconv.Atoi(args[i+1])
				return p
			}
		}
	}
	t.Fatalf("no engine for %s", modelPath)
	return 0
}

// startOAIDaemon starts the daemon and, at the end of the test, stops it
// with SIGTERM so that it stops its engines too.
func startOAIDaemon(t *testing.T, bin string, s e2eSetup) *daemon {
	t.Helper()
	d := startDaemon(t, bin, s.cfg, s.port)
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Errorf("daemon did not stop 30 s after SIGTERM")
		}
	})
	return d
}

// poll calls cond until it holds (30 s at most).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func modelRunning(d *daemon, name string) int {
	var ms struct{ Models []map[string]any }
	d.do("GET", "/models", nil, &ms)
	for _, m := range ms.Models {
		if m["name"] == name {
			n, _ := m["running"].(float64)
			return int(n)
		}
	}
	return -1
}

func TestE2E_OpenAIClientDisconnectFreesTheSlot(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeOAIConfig(t, engine, 9000, nil,
		oaiModel{name: "alpha", parallel: 1, extra: []string{"--test-token-delay", "20ms", "--metrics"}})
	d := startOAIDaemon(t, bin, s)
	events := followEvents(t, d.url, s.sizes, s.budget)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := strings.TrimSpace(strings.Repeat("a long answer ", 100)) // 300 tokens: 6 s
	resp := d.post(ctx, "/v1/chat/completions", chatBody("alpha", long, true))
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	sseData(t, r) // the role chunk
	if data := sseData(t, r); !strings.Contains(data, `"content":"echo:"`) {
		t.Fatalf("first token chunk %q", data)
	}
	started := waitEvent(t, events, "the chat's job_started", func(ev map[string]any) bool {
		id, _ := ev["job_id"].(string)
		return ev["type"] == "job_started" && strings.HasPrefix(id, "chat-")
	})
	if n := modelRunning(d, "alpha"); n != 1 {
		t.Fatalf("running while streaming = %d, want 1", n)
	}
	cancel() // the client goes away mid-stream

	waitEvent(t, events, "the chat's job cancelled", func(ev map[string]any) bool {
		return ev["type"] == "job_finished" && ev["job_id"] == started["job_id"] && ev["state"] == "cancelled"
	})
	poll(t, "alpha's slot free in /models", func() bool { return modelRunning(d, "alpha") == 0 })
	// The engine stopped generating: nothing in flight there either.
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", enginePort(t, engine, filepath.Join(s.dir, "alpha.gguf")))
	poll(t, "the engine's request aborted", func() bool {
		resp, err := http.Get(metrics)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte("\nllamacpp:requests_processing 0\n"))
	})
	// The one slot serves the next request.
	var out struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if code := d.postJSON("/v1/chat/completions", chatBody("alpha", "next one", false), &out); code != 200 || out.Choices[0].Message.Content != "echo: next one" {
		t.Fatalf("next request: %d %+v", code, out)
	}
}

func TestE2E_OpenAIRequestWaitsForSwap(t *testing.T) {
	bin, engine := buildBinaries(t)
	// The budget fits one model: a chat to beta while alpha streams waits
	// until alpha's answer is complete (a busy model is never killed), then
	// alpha is evicted and beta loads.
	s := writeOAIConfig(t, engine, 4500, nil,
		oaiModel{name: "alpha", extra: []string{"--test-token-delay", "5ms"}},
		oaiModel{name: "beta"})
	stopSampling := sampleEngines(engine, s.sizes, s.budget)
	d := startOAIDaemon(t, bin, s)
	events := followEvents(t, d.url, s.sizes, s.budget)

	prompt := strings.TrimSpace(strings.Repeat("alpha talks ", 30))
	resp := d.post(context.Background(), "/v1/chat/completions", chatBody("alpha", prompt, true))
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	sseData(t, r) // the role chunk
	if data := sseData(t, r); !strings.Contains(data, `"content":"echo:"`) {
		t.Fatalf("first token chunk %q", data) // alpha is generating
	}

	type answer struct {
		code    int
		model   string
		content string
	}
	betaCh := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/chat/completions", strings.NewReader(chatBody("beta", "beta speaks", false)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			betaCh <- answer{code: -1, content: err.Error()}
			return
		}
		defer resp.Body.Close()
		var out struct {
			Model   string
			Choices []struct{ Message struct{ Content string } }
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		a := answer{code: resp.StatusCode, model: out.Model}
		if len(out.Choices) > 0 {
			a.content = out.Choices[0].Message.Content
		}
		betaCh <- a
	}()
	text, _, finish := readChatStream(t, r)
	if "echo:"+text != "echo: "+prompt || finish != "stop" {
		t.Fatalf("alpha's stream was cut: %q %q", text, finish)
	}
	a := <-betaCh
	if a.code != 200 || a.model != "beta" || a.content != "echo: beta speaks" {
		t.Fatalf("beta: %+v", a)
	}
	waitEvent(t, events, "alpha evicted", func(ev map[string]any) bool {
		return ev["type"] == "model_evicted" && ev["model"] == "alpha"
	})
	unloaded := waitEvent(t, events, "alpha unloaded", func(ev map[string]any) bool {
		return ev["type"] == "model_unloaded" && ev["model"] == "alpha"
	})
	alphaDone := waitEvent(t, events, "alpha's chat finished", func(ev map[string]any) bool {
		return ev["type"] == "job_finished" && ev["model"] == "alpha" && ev["state"] == "completed"
	})
	if unloaded["seq"].(float64) < alphaDone["seq"].(float64) {
		t.Fatalf("alpha stopped (seq %v) before its chat finished (seq %v)", unloaded["seq"], alphaDone["seq"])
	}
	var h struct {
		LoadedModels []string `json:"loaded_models"`
	}
	d.do("GET", "/health", nil, &h)
	if len(h.LoadedModels) != 1 || h.LoadedModels[0] != "beta" {
		t.Fatalf("loaded %v, want [beta]", h.LoadedModels)
	}
	requireWithinBudget(t, stopSampling, events)
}

func TestE2E_OpenAINodeClient(t *testing.T) {
	bin, engine := buildBinaries(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the official openai client cannot run (.ci/run installs it)")
	}
	if _, err := os.Stat("scripts/openai-client/node_modules/openai/package.json"); err != nil {
		t.Skip("scripts/openai-client/node_modules is missing: run npm ci there (.ci/run does)")
	}
	s := writeOAIConfig(t, engine, 9000, []string{"sk-vramcram-test"},
		oaiModel{name: "alpha", parallel: 2, embeddings: true, extra: []string{"--test-token-delay", "1ms"}},
		oaiModel{name: "slow", extra: []string{"--test-load-delay", "2500ms"}})
	d := startOAIDaemon(t, bin, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "scripts/openai-client/test.mjs",
		"--base-url", d.url+"/v1", "--model", "alpha", "--api-key", "sk-vramcram-test",
		"--embeddings-model", "alpha", "--slow-model", "slow", "--expect-echo")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("openai client: %v", err)
	}
}

// TestE2E_RealLlamaServerOpenAI runs the OpenAI routes and the official
// openai client against a real llama-server:
// LLAMA_SERVER=/path/to/llama-server LLAMA_MODEL=/path/to/model.gguf.
// Two model names share the file and the budget holds one, so the second
// model's first request waits for a swap.
func TestE2E_RealLlamaServerOpenAI(t *testing.T) {
	server, model := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL")
	if server == "" || model == "" {
		t.Skip("set LLAMA_SERVER and LLAMA_MODEL to run against a real llama-server")
	}
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 5000, safety_margin_mb: 500}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 10, worker_ready_timeout_seconds: 60, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 3}
logging: {level: debug, format: json}
models:
  llm:
    - {name: tiny-a, model_path: %s, vram_mb: 4000, config: {parallel: 2, context_size: 512, gpu_layers: 0, embeddings: true, extra_args: [--pooling, mean]}}
    - {name: tiny-b, model_path: %s, vram_mb: 4000, config: {parallel: 2, context_size: 512, gpu_layers: 0}}
`, port, filepath.Join(dir, "data"), server, model, model)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startOAIDaemon(t, bin, e2eSetup{cfg: path, port: port})
	events := followEvents(t, d.url, map[string]int{"tiny-a": 4000, "tiny-b": 4000}, 4500)

	for _, m := range []string{"tiny-a", "tiny-b", "tiny-a"} { // each one a swap
		var out struct {
			Model   string
			Choices []struct {
				Message      struct{ Content string }
				FinishReason string `json:"finish_reason"`
			}
		}
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,"seed":1}`, m)
		if code := d.postJSON("/v1/chat/completions", body, &out); code != 200 || out.Model != m || len(out.Choices) != 1 || out.Choices[0].Message.Content == "" {
			t.Fatalf("chat %s: %d %+v", m, code, out)
		}
		t.Logf("%s: %q (%s)", m, out.Choices[0].Message.Content, out.Choices[0].FinishReason)
	}
	if n := len(events.ofType("model_evicted")); n < 2 {
		t.Fatalf("evictions %d, want a swap per request", n)
	}
	resp := d.post(context.Background(), "/v1/chat/completions", `{"model":"tiny-a","stream":true,"max_tokens":12,"messages":[{"role":"user","content":"Hello"}]}`)
	text, chunks, finish := readChatStream(t, bufio.NewReader(resp.Body))
	resp.Body.Close()
	if chunks < 12 || finish != "length" || text == "" {
		t.Fatalf("stream %q in %d chunks, finish %q", text, chunks, finish)
	}
	var emb struct {
		Model string
		Data  []struct{ Embedding []float64 }
	}
	if code := d.postJSON("/v1/embeddings", `{"model":"tiny-a","input":["one","two"]}`, &emb); code != 200 || emb.Model != "tiny-a" || len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 {
		t.Fatalf("embeddings: %d %+v", code, emb)
	}
	if node, err := exec.LookPath("node"); err == nil {
		if _, err := os.Stat("scripts/openai-client/node_modules/openai/package.json"); err == nil {
			out, err := exec.Command(node, "scripts/openai-client/test.mjs", "--base-url", d.url+"/v1",
				"--model", "tiny-a", "--embeddings-model", "tiny-a").CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("openai client: %v", err)
			}
		}
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.over) > 0 {
		t.Fatalf("ledger over budget: %v", events.over)
	}
}
