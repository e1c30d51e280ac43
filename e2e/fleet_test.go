package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store/redisstore/redistest"
)

var fleetModels = []string{"m0", "m1", "m2", "m3"}

// fleetNodeConfig writes the config of one fleet node: its own data and
// model directories, its own VRAM budget, the shared Redis.
func fleetNodeConfig(t *testing.T, engine, redisURL, node string, totalMB int) (cfgPath, dir string, port int) {
	t.Helper()
	dir = t.TempDir()
	port = freePort(t)
	var models strings.Builder
	for _, name := range fleetModels {
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 3000\n      config: {parallel: 2, context_size: 512, extra_args: [--test-load-delay, 50ms, --test-token-delay, 3ms]}\n", name, path)
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage:
  data_dir: %s
  backend: redis
  redis: {url: %q, lease_seconds: 3, node: %s, prefix: "fleet:"}
vram: {total_mb: %d, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {heartbeat_interval_seconds: 1, heartbeat_timeout_seconds: 5, worker_ready_timeout_seconds: 20, graceful_shutdown_timeout_seconds: 10, stop_grace_seconds: 2}
scheduling: {policy: batch, max_wait_seconds: 60, max_attempts: 5}
logging: {level: info, format: json}
models:
  llm:
%s`, port, filepath.Join(dir, "data"), redisURL, node, totalMB, engine, models.String())
	cfgPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dir, port
}

// killEnginesUnder SIGKILLs the stand-in engines whose model lives under
// dir: those a kill -9'd node left behind.
func killEnginesUnder(bin, dir string) {
	for pid := range engineProcs(bin) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// loadLog follows a node's /events (which carries every node's events in
// a fleet) and records which nodes loaded each model.
type loadLog struct {
	mu      sync.Mutex
	loaders map[string]map[string]bool // model → nodes that started loading it
}

func followLoads(t *testing.T, d *daemon, self string, key ...string) *loadLog {
	t.Helper()
	l := &loadLog{loaders: map[string]map[string]bool{}}
	req, _ := http.NewRequest("GET", d.url+"/events", nil)
	for _, k := range key {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev struct{ Type, Model, Node string }
			if json.Unmarshal([]byte(line), &ev) != nil || ev.Type != "model_loading" {
				continue
			}
			if ev.Node == "" {
				ev.Node = self
			}
			l.mu.Lock()
			if l.loaders[ev.Model] == nil {
				l.loaders[ev.Model] = map[string]bool{}
			}
			l.loaders[ev.Model][ev.Node] = true
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *loadLog) nodes(model string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n := range l.loaders[model] {
		out = append(out, n)
	}
	return out
}

// TestE2E_FleetOfThree: a real redis-server and three nodes with their own
// budgets share one queue. 300 jobs over 4 models, submitted to all three,
// all complete; each model is loaded on one node while that node keeps up;
// kill -9 of one node while its jobs run: they complete on the others,
// every job exactly once; GET /jobs/{id} on any node shows any job.
func TestE2E_FleetOfThree(t *testing.T) {
	bin, engine := buildBinaries(t)
	srv := redistest.Start(t)
	names := []string{"node-a", "node-b", "node-c"}
	budgets := []int{7000, 7000, 10000} // 2, 2 and 3 models of 3000 MiB
	var nodes []*daemon
	var dirs []string
	for k, name := range names {
		cfg, dir, port := fleetNodeConfig(t, engine, srv.URL(), name, budgets[k])
		nodes = append(nodes, startDaemon(t, bin, cfg, port))
		dirs = append(dirs, dir)
	}
	victim := 2
	t.Cleanup(func() {
		if victim >= 0 {
			killEnginesUnder(engine, dirs[victim])
		}
	})
	loads := followLoads(t, nodes[0], names[0])

	// Phase 1: 120 jobs; every node's queue is served by the node holding
	// the model, which keeps up, so no model is loaded twice.
	prompts := map[string]string{}
	submit := func(k int, words int) {
		p := fmt.Sprintf("fleet job %d %s", k, strings.Repeat("w ", words))
		prompts[nodes[k%3].submit(fleetModels[k%4], p)] = p
	}
	for k := range 120 {
		submit(k, 2)
	}
	for id := range prompts {
		if js := nodes[0].waitJob(id, 120*time.Second); js.Status != "completed" {
			t.Fatalf("job %s: %+v", id, js)
		}
	}
	for _, m := range fleetModels {
		if got := loads.nodes(m); len(got) != 1 {
			t.Fatalf("model %s loaded on nodes %v; want exactly one while it keeps up", m, got)
		}
	}

	// Phase 2: 180 slower jobs; kill -9 one node while it runs some.
	for k := 120; k < 300; k++ {
		submit(k, 40)
	}
	// The victim is whichever of nodes 1 and 2 is first seen running a job
	// (node 0 follows the events): which node holds which model is the
	// fleet's choice, not the test's.
	deadline := time.Now().Add(60 * time.Second)
	victim = -1
	for victim < 0 {
		for _, k := range []int{1, 2} {
			var h map[string]any
			nodes[k].do("GET", "/health", nil, &h)
			if r, _ := h["running"].(float64); r > 0 {
				victim = k
				break
			}
		}
		if victim < 0 && time.Now().After(deadline) {
			t.Fatal("neither node 1 nor node 2 ran a job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	nodes[victim].signal(syscall.SIGKILL, 10*time.Second)
	live := []*daemon{nodes[0], nodes[3-victim]}

	retried := 0
	for id, p := range prompts {
		js := live[0].waitJob(id, 180*time.Second)
		if js.Status != "completed" {
			t.Fatalf("job %s: %+v", id, js)
		}
		if js.Attempts > 1 {
			retried++
		}
		for _, d := range live {
			if got, want := d.resultText(id), strings.Join(strings.Fields("echo: "+p), " "); got != want {
				t.Fatalf("job %s on %s: result %q, want %q", id, d.url, got, want)
			}
		}
	}
	if retried == 0 {
		t.Fatal("no job was retried after the kill: the victim's running jobs should have come back")
	}
	t.Logf("300 jobs completed; %d retried after the kill", retried)

	// Every job is listed once, completed, on any node.
	var list struct {
		Jobs []struct {
			JobID  string `json:"job_id"`
			Status string `json:"status"`
		} `json:"jobs"`
	}
	if code := live[1].do("GET", "/jobs?limit=1000", nil, &list); code != 200 {
		t.Fatalf("list: %d", code)
	}
	seen := map[string]int{}
	for _, j := range list.Jobs {
		seen[j.JobID]++
		if j.Status != "completed" {
			t.Fatalf("job %s listed %s", j.JobID, j.Status)
		}
	}
	if len(seen) != 300 {
		t.Fatalf("%d jobs listed, want 300", len(seen))
	}

	// /health shows the fleet: the two live nodes, their GPUs and models.
	var h struct {
		Node  string
		Fleet []struct {
			Node   string
			GPUs   []map[string]any `json:"gpus"`
			Loaded []string         `json:"loaded_models"`
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		live[0].do("GET", "/health", nil, &h)
		if len(h.Fleet) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health fleet %+v; want the two live nodes", h.Fleet)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h.Node != names[0] || h.Fleet[0].Node != names[0] || h.Fleet[1].Node != names[3-victim] || len(h.Fleet[0].GPUs) != 1 {
		t.Fatalf("health fleet %+v", h)
	}
}

// TestE2E_FleetRedisOutage: Redis stopped for 10 s and started again: no
// accepted job is lost, submits during the outage get 503 with a clear
// error, and the node carries on.
func TestE2E_FleetRedisOutage(t *testing.T) {
	bin, engine := buildBinaries(t)
	srv := redistest.Start(t)
	cfg, _, port := fleetNodeConfig(t, engine, srv.URL(), "solo", 10000)
	d := startDaemon(t, bin, cfg, port)
	prompts := map[string]string{}
	for k := range 60 {
		p := fmt.Sprintf("outage job %d %s", k, strings.Repeat("w ", 30))
		prompts[d.submit(fleetModels[k%4], p)] = p
	}
	srv.Stop()
	refused := 0
	until := time.Now().Add(10 * time.Second)
	for time.Now().Before(until) {
		var body struct {
			Error struct{ Code, Message string }
		}
		code := d.do("POST", "/jobs", map[string]any{"model": "m0", "prompt": "during the outage"}, &body)
		if code != http.StatusServiceUnavailable || body.Error.Code != "store_unavailable" {
			t.Fatalf("submit during the outage: %d %+v; want 503 store_unavailable", code, body)
		}
		refused++
		time.Sleep(200 * time.Millisecond)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// The node's connection pool reconnects within a few seconds.
	deadline := time.Now().Add(30 * time.Second)
	for id := range prompts {
		for d.do("GET", "/jobs/"+id, nil, nil) != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("the node did not reach Redis again within 30s of its restart")
			}
			time.Sleep(50 * time.Millisecond)
		}
		break
	}
	for id, p := range prompts {
		js := d.waitJob(id, 120*time.Second)
		if js.Status != "completed" {
			t.Fatalf("job %s accepted before the outage: %+v", id, js)
		}
		if got := d.resultText(id); got != strings.Join(strings.Fields("echo: "+p), " ") {
			t.Fatalf("job %s: %q", id, got)
		}
	}
	after := d.submit("m1", "after the outage")
	if js := d.waitJob(after, 60*time.Second); js.Status != "completed" {
		t.Fatalf("job after the outage: %+v", js)
	}
	t.Logf("%d submits refused with 503 during the 10 s outage; %d accepted jobs all completed", refused, len(prompts))
}

// fleetKey is the API key of the nodes of TestE2E_FleetProxiesInteractive.
const fleetKey = "fleet-e2e-key-4f1c9a"

// keyedCall sends body to url with fleetKey in the header hdr (Authorization
// gets "Bearer KEY"), answering the status, content type and body.
func keyedCall(t *testing.T, url, contentType, hdr string, body []byte) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if hdr == "Authorization" {
		req.Header.Set(hdr, "Bearer "+fleetKey)
	} else {
		req.Header.Set(hdr, fleetKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// TestE2E_FleetProxiesInteractive: interactive requests through every door
// (OpenAI, Anthropic, Responses, a passthrough route with a multipart body,
// Ollama), sent with the client's key to a node that lacks the model, are
// answered by the node that has it loaded, and the node they were sent to
// never loads the model.
func TestE2E_FleetProxiesInteractive(t *testing.T) {
	bin, engine := buildBinaries(t)
	srv := redistest.Start(t)
	names := []string{"node-a", "node-b"}
	var nodes []*daemon
	for _, name := range names {
		cfg, _, port := fleetNodeConfig(t, engine, srv.URL(), name, 7000)
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		keyed := strings.Replace(string(b), "metrics_port: 0}", "metrics_port: 0, api_keys: ["+fleetKey+"]}", 1)
		if err := os.WriteFile(cfg, []byte(keyed), 0o644); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t, bin, cfg, port)
		d.key = fleetKey // /health shows the fleet only to a client with a key
		nodes = append(nodes, d)
	}
	// The Batch API needs a bbolt store: a fleet node says so.
	if code, _, b := keyedCall(t, nodes[0].url+"/v1/batches", "application/json", "Authorization", []byte(`{}`)); code != http.StatusNotImplemented ||
		!strings.Contains(string(b), "storage.backend bbolt") {
		t.Fatalf("POST /v1/batches on a fleet node: %d %s, want 501 naming storage.backend", code, b)
	}
	chat := []byte(`{"model":"m0","messages":[{"role":"user","content":"hello there"}]}`)
	// A chat request sent to node-a loads m0 there: no node had it.
	holder, other := 0, 1
	if code, _, b := keyedCall(t, nodes[holder].url+"/v1/chat/completions", "application/json", "Authorization", chat); code != http.StatusOK {
		t.Fatalf("warm-up chat via %s: %d %s", names[holder], code, b)
	}
	type node struct {
		Node   string    `json:"node"`
		Seen   time.Time `json:"seen"`
		Loaded []string  `json:"loaded_models"`
	}
	type health struct {
		Loaded []string `json:"loaded_models"`
		Fleet  []node   `json:"fleet"`
	}
	var h health
	if nodes[holder].do("GET", "/health", nil, &h); !slices.Contains(h.Loaded, "m0") {
		t.Fatalf("%s does not hold m0 after its chat: %v", names[holder], h.Loaded)
	}
	loads := followLoads(t, nodes[other], names[other], fleetKey)
	// Wait until the other node has beaten twice since it could read the
	// holder's beat with m0 loaded: its view of the fleet then has it.
	deadline := time.Now().Add(30 * time.Second)
	var seenAt time.Time
	for beats := 0; beats < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the other node never saw m0 loaded on the holder")
		}
		var h health
		nodes[other].do("GET", "/health", nil, &h)
		for _, n := range h.Fleet {
			switch {
			case n.Node == names[holder] && seenAt.IsZero() && slices.Contains(n.Loaded, "m0"):
				seenAt = time.Now().UTC()
			case n.Node == names[other] && !seenAt.IsZero() && n.Seen.After(seenAt):
				beats, seenAt = beats+1, n.Seen
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("model", "m0")
	fw, _ := mw.CreateFormFile("file", "clip.wav")
	_, _ = fw.Write([]byte("RIFF-stand-in-audio"))
	_ = mw.Close()
	tests := []struct {
		door, path, ctype, hdr string
		body                   []byte
		want                   func(ctype string, b []byte) bool
	}{
		{"OpenAI", "/v1/chat/completions", "application/json", "Authorization", chat, func(_ string, b []byte) bool {
			var out struct {
				Choices []struct {
					Message struct{ Content string } `json:"message"`
				} `json:"choices"`
			}
			return json.Unmarshal(b, &out) == nil && len(out.Choices) == 1 && out.Choices[0].Message.Content != ""
		}},
		{"Anthropic", "/v1/messages", "application/json", "X-Api-Key",
			[]byte(`{"model":"m0","max_tokens":8,"messages":[{"role":"user","content":"hello there"}]}`), func(_ string, b []byte) bool {
				var out struct {
					Type    string
					Content []struct{ Type, Text string }
				}
				return json.Unmarshal(b, &out) == nil && out.Type == "message" && len(out.Content) == 1 && out.Content[0].Text != ""
			}},
		{"Responses", "/v1/responses", "application/json", "Authorization",
			[]byte(`{"model":"m0","input":"hello there","stream":true}`), func(ct string, b []byte) bool {
				return strings.HasPrefix(ct, "text/event-stream") && bytes.Contains(b, []byte("event: response.completed"))
			}},
		{"Passthrough", "/v1/audio/transcriptions", mw.FormDataContentType(), "Authorization", form.Bytes(), func(_ string, b []byte) bool {
			return bytes.Contains(b, []byte("transcript of clip.wav (19 bytes)"))
		}},
		{"Ollama", "/api/chat", "application/json", "Authorization",
			[]byte(`{"model":"m0","messages":[{"role":"user","content":"hello there"}]}`), func(ct string, b []byte) bool {
				lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
				var last struct{ Done bool }
				return ct == "application/x-ndjson" && len(lines) > 1 && json.Unmarshal(lines[len(lines)-1], &last) == nil && last.Done
			}},
	}
	for _, tc := range tests {
		code, ct, b := keyedCall(t, nodes[other].url+tc.path, tc.ctype, tc.hdr, tc.body)
		if code != http.StatusOK || !tc.want(ct, b) {
			t.Fatalf("%s door via %s: %d %s %s", tc.door, names[other], code, ct, b)
		}
		var h health
		nodes[other].do("GET", "/health", nil, &h)
		if slices.Contains(h.Loaded, "m0") {
			t.Fatalf("%s door: %s loaded m0 itself: %v", tc.door, names[other], h.Loaded)
		}
	}
	if got := loads.nodes("m0"); slices.Contains(got, names[other]) {
		t.Fatalf("m0 loading on %v; want only %s", got, names[holder])
	}
}
