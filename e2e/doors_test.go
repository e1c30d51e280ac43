package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// nodeClients returns node and skips the test when it or the pinned npm
// clients are missing (.ci/run installs both).
func nodeClients(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the official clients cannot run (.ci/run installs it)")
	}
	for _, pkg := range []string{"openai", "@anthropic-ai/sdk", "ollama"} {
		if _, err := os.Stat(filepath.Join("scripts/openai-client/node_modules", pkg, "package.json")); err != nil {
			t.Skipf("scripts/openai-client/node_modules/%s is missing: run npm ci there (.ci/run does)", pkg)
		}
	}
	return node
}

// runNode runs one client script of scripts/openai-client with args.
func runNode(t *testing.T, node, script string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join("scripts/openai-client", script)}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	t.Logf("%s: %s", script, out)
	if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
}

// TestE2E_DoorsNodeClients runs the official openai, @anthropic-ai/sdk and
// ollama npm clients against VramCram with stand-in engines, each also
// through an alias.
func TestE2E_DoorsNodeClients(t *testing.T) {
	bin, engine := buildBinaries(t)
	node := nodeClients(t)
	s := writeOAIConfig(t, engine, 9000, []string{"sk-doors"},
		oaiModel{name: "alpha", parallel: 2, embeddings: true, aliases: []string{"gpt-4o-mini", "alpha-chat:7b"},
			extra: []string{"--test-token-delay", "1ms"}})
	d := startOAIDaemon(t, bin, s)
	common := []string{"--model", "alpha", "--api-key", "sk-doors", "--expect-echo"}
	t.Run("OpenAI", func(t *testing.T) {
		runNode(t, node, "openai-doors.mjs", append([]string{"--base-url", d.url + "/v1", "--alias", "gpt-4o-mini", "--embeddings-model", "alpha"}, common...)...)
	})
	t.Run("Anthropic", func(t *testing.T) {
		runNode(t, node, "anthropic.mjs", append([]string{"--base-url", d.url, "--alias", "gpt-4o-mini"}, common...)...)
	})
	t.Run("Ollama", func(t *testing.T) {
		runNode(t, node, "ollama.mjs", append([]string{"--base-url", d.url, "--alias", "alpha-chat:7b", "--embeddings-model", "alpha"}, common...)...)
	})
}

// postRaw posts body with contentType and returns the status and body.
func postRaw(t *testing.T, url, contentType string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestE2E_Passthrough(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeOAIConfig(t, engine, 9000, nil,
		oaiModel{name: "alpha", parallel: 2, aliases: []string{"ranker"}, extra: []string{"--reranking"}},
		oaiModel{name: "beta", parallel: 2})
	d := startOAIDaemon(t, bin, s)

	t.Run("Tokenize", func(t *testing.T) {
		code, b := postRaw(t, d.url+"/tokenize", "application/json", []byte(`{"model":"beta","content":"hi"}`))
		if code != 200 || string(bytes.TrimSpace(b)) != `{"tokens":[104,105]}` {
			t.Fatalf("%d %s", code, b)
		}
		if modelRunning(d, "beta") < 0 || !modelLoaded(d, "beta") {
			t.Fatal("beta's engine did not answer /tokenize")
		}
	})
	t.Run("Rerank", func(t *testing.T) {
		body := `{"model":"ranker","query":"red apple","documents":["a green pear","a red apple"]}`
		code, b := postRaw(t, d.url+"/v1/rerank", "application/json", []byte(body))
		var out struct {
			Results []struct {
				Index int     `json:"index"`
				Score float64 `json:"relevance_score"`
			} `json:"results"`
		}
		if err := json.Unmarshal(b, &out); err != nil || code != 200 || len(out.Results) != 2 || out.Results[0].Index != 1 {
			t.Fatalf("alpha (--reranking): %d %s", code, b)
		}
		// beta's engine has no --reranking: its own 501 comes back unchanged.
		code, b = postRaw(t, d.url+"/v1/rerank", "application/json", []byte(strings.Replace(body, "ranker", "beta", 1)))
		if code != 501 || !strings.Contains(string(b), "Start it with `--reranking`") {
			t.Fatalf("beta: %d %s", code, b)
		}
	})
	t.Run("UpstreamProps", func(t *testing.T) {
		for _, m := range []string{"alpha", "beta", "ranker"} {
			var props struct {
				Alias string `json:"model_alias"`
				Path  string `json:"model_path"`
			}
			want := m
			if m == "ranker" {
				want = "alpha"
			}
			if code := d.do("GET", "/upstream/"+m+"/props", nil, &props); code != 200 || props.Alias != want ||
				props.Path != filepath.Join(s.dir, want+".gguf") {
				t.Fatalf("/upstream/%s/props: %d %+v", m, code, props)
			}
		}
		var slots []map[string]any
		if code := d.do("GET", "/slots?model=beta", nil, &slots); code != 200 || len(slots) != 2 {
			t.Fatalf("GET /slots?model=beta: %d %v", code, slots)
		}
	})
	t.Run("Transcription", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("file", "clip.wav")
		_, _ = fw.Write(make([]byte, 3000))
		_ = mw.WriteField("model", "beta")
		_ = mw.Close()
		code, b := postRaw(t, d.url+"/v1/audio/transcriptions", mw.FormDataContentType(), buf.Bytes())
		if code != 200 || !strings.Contains(string(b), `"text":"transcript of clip.wav (3000 bytes)"`) {
			t.Fatalf("%d %s", code, b)
		}
	})
	t.Run("AliasInEachDoor", func(t *testing.T) {
		id := d.submit("ranker", "by alias")
		if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
			t.Fatalf("job by alias: %+v", js)
		}
		if got := d.resultText(id); got != "echo: by alias" {
			t.Fatalf("jobs door: %q", got)
		}
		code, b := postRaw(t, d.url+"/v1/messages", "application/json",
			[]byte(`{"model":"ranker","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}`))
		if code != 200 || !strings.Contains(string(b), `"text":"echo: hi"`) {
			t.Fatalf("anthropic door: %d %s", code, b)
		}
		code, b = postRaw(t, d.url+"/api/chat", "application/json",
			[]byte(`{"model":"ranker","stream":false,"messages":[{"role":"user","content":"hi"}]}`))
		if code != 200 || !strings.Contains(string(b), `"content":"echo: hi"`) {
			t.Fatalf("ollama door: %d %s", code, b)
		}
		code, b = postRaw(t, d.url+"/v1/responses", "application/json", []byte(`{"model":"ranker","input":"hi"}`))
		if code != 200 || !strings.Contains(string(b), `"text":"echo: hi"`) {
			t.Fatalf("responses door: %d %s", code, b)
		}
	})
}

// modelLoaded reports whether name is loaded (ready or busy).
func modelLoaded(d *daemon, name string) bool {
	var h struct {
		LoadedModels []string `json:"loaded_models"`
	}
	d.do("GET", "/health", nil, &h)
	for _, m := range h.LoadedModels {
		if m == name {
			return true
		}
	}
	return false
}

// doorRequest sends one request for model through door and reads it to
// its end: it returns an error unless the answer is complete and right.
func doorRequest(base, door, model, prompt string) error {
	echo := "echo: " + prompt
	var path, body string
	switch door {
	case "openai":
		path, body = "/v1/chat/completions", chatBody(model, prompt, true)
	case "anthropic":
		path = "/v1/messages"
		body = fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":true,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	case "ollama":
		path = "/api/chat"
		body = fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	}
	resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s %v", door, model, resp.StatusCode, b, err)
	}
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if door == "ollama" {
			data, ok = line, line != ""
		}
		if !ok || data == "[DONE]" {
			continue
		}
		var err error
		switch door {
		case "openai":
			var ch struct {
				Choices []struct{ Delta struct{ Content string } }
			}
			err = json.Unmarshal([]byte(data), &ch)
			for _, c := range ch.Choices {
				text.WriteString(c.Delta.Content)
			}
		case "anthropic":
			var ch struct{ Delta struct{ Text string } }
			err = json.Unmarshal([]byte(data), &ch)
			text.WriteString(ch.Delta.Text)
		case "ollama":
			var ch struct{ Message struct{ Content string } }
			err = json.Unmarshal([]byte(data), &ch)
			text.WriteString(ch.Message.Content)
		}
		if err != nil {
			return fmt.Errorf("%s %s: line %q: %v", door, model, line, err)
		}
	}
	if text.String() != echo {
		return fmt.Errorf("%s %s: text %q, want %q", door, model, text.String(), echo)
	}
	return nil
}

// TestE2E_DoorsAlternateUnderBudget: two models that do not fit together,
// hit alternately through the OpenAI, Anthropic and Ollama doors at once:
// every request succeeds and the engines alive never exceed the budget.
func TestE2E_DoorsAlternateUnderBudget(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeOAIConfig(t, engine, 4500, nil,
		oaiModel{name: "alpha", parallel: 2, extra: []string{"--test-token-delay", "2ms"}},
		oaiModel{name: "beta", parallel: 2, extra: []string{"--test-token-delay", "2ms"}})
	stopSampling := sampleEngines(engine, s.sizes, s.budget)
	d := startOAIDaemon(t, bin, s)
	events := followEvents(t, d.url, s.sizes, s.budget)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for k, door := range []string{"openai", "anthropic", "ollama"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				model := []string{"alpha", "beta"}[(i+k)%2]
				if err := doorRequest(d.url, door, model, fmt.Sprintf("%s request %d to %s", door, i, model)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireWithinBudget(t, stopSampling, events)
	if n := len(events.ofType("model_evicted")); n < 1 {
		t.Fatalf("%d evictions: the two models never swapped", n)
	}
}

// TestE2E_RealLlamaServerDoors runs the three official clients through
// VramCram against a real llama-server:
// LLAMA_SERVER=/path/to/llama-server LLAMA_MODEL=/path/to/model.gguf.
func TestE2E_RealLlamaServerDoors(t *testing.T) {
	server, model := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL")
	if server == "" || model == "" {
		t.Skip("set LLAMA_SERVER and LLAMA_MODEL to run against a real llama-server")
	}
	bin, _ := buildBinaries(t)
	node := nodeClients(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0, api_keys: [sk-real]}
storage: {data_dir: %s}
vram: {total_mb: 5000, safety_margin_mb: 500}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 10, worker_ready_timeout_seconds: 60, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 3}
logging: {level: debug, format: json}
models:
  llm:
    - {name: tiny, aliases: [tiny-alias], model_path: %s, vram_mb: 4000, config: {parallel: 2, context_size: 512, gpu_layers: 0, embeddings: true, extra_args: [--pooling, mean, --jinja]}}
`, port, filepath.Join(dir, "data"), server, model)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startOAIDaemon(t, bin, e2eSetup{cfg: path, port: port})
	common := []string{"--model", "tiny", "--api-key", "sk-real", "--alias", "tiny-alias"}
	runNode(t, node, "openai-doors.mjs", append([]string{"--base-url", d.url + "/v1", "--embeddings-model", "tiny"}, common...)...)
	runNode(t, node, "anthropic.mjs", append([]string{"--base-url", d.url}, common...)...)
	runNode(t, node, "ollama.mjs", append([]string{"--base-url", d.url, "--embeddings-model", "tiny"}, common...)...)
}
