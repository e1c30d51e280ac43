package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vramcram/vramcram/api"
)

// relayed is one request the fake fleet node got.
type relayed struct {
	method, uri, body, contentType, auth, apiKey, forwarded string
}

// fakeNode stands for another node of the fleet: it records what it is
// sent and answers with answer.
type fakeNode struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []relayed
	answer http.HandlerFunc
}

func newFakeNode(t *testing.T, answer http.HandlerFunc) *fakeNode {
	t.Helper()
	n := &fakeNode{answer: answer}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.got = append(n.got, relayed{r.Method, r.URL.RequestURI(), string(b), r.Header.Get("Content-Type"),
			r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get(api.ForwardedHeader)})
		n.mu.Unlock()
		n.answer(w, r)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) requests() []relayed {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]relayed(nil), n.got...)
}

// nodeAnswer is what the fake node answers by default.
const nodeAnswer = `{"answered_by":"node-a"}`

func answerJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, nodeAnswer)
}

// setupRelay is an OpenAI bundle named node-b whose RemoteFor names url
// for every model and records the models it was asked about.
func setupRelay(t *testing.T, url string, opts ...func(*api.Config)) (*oaBundle, *calls) {
	t.Helper()
	asked := &calls{}
	ob := setupOpenAI(t, append([]func(*api.Config){withAliases, func(c *api.Config) {
		c.Node = "node-b"
		c.RemoteFor = func(_ context.Context, model string) (string, bool) {
			asked.add(model)
			return url, true
		}
	}}, opts...)...)
	return ob, asked
}

// send sends a request to the bundle's listener and returns the answer.
func send(t *testing.T, ob *oaBundle, method, path, contentType, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ob.ts.URL+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// multipartBody is a transcription form naming model.
func multipartBody(t *testing.T, model string) (contentType, body string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("model", model)
	fw, err := mw.CreateFormFile("file", "a.wav")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write([]byte("RIFF0000WAVE"))
	_ = mw.Close()
	return mw.FormDataContentType(), buf.String()
}

// TestRemote_EveryDoorRelays: each interactive route that names a model,
// through every door, is relayed to the node RemoteFor names: the same
// method, path, query, body bytes, content type and key, marked
// forwarded by this node; the answer is that node's, and no slot is taken
// here.
func TestRemote_EveryDoorRelays(t *testing.T) {
	t.Parallel()
	node := newFakeNode(t, answerJSON)
	ob, asked := setupRelay(t, node.srv.URL, func(c *api.Config) { c.APIKeys = []string{"k1"} })
	formType, form := multipartBody(t, "qwen")
	const js = "application/json"
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		method, path, ctype, body string
		hdr                       []string
	}{
		{"POST", "/v1/chat/completions", js, `{"model":"qwen",` + msgs + `}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/embeddings", js, `{"model":"qwen","input":"hi"}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/messages", js, `{"model":"gpt-4o-mini","max_tokens":5,` + msgs + `}`, []string{"X-Api-Key", "k1"}},
		{"POST", "/v1/messages/count_tokens", js, `{"model":"qwen",` + msgs + `}`, []string{"X-Api-Key", "k1"}},
		{"POST", "/v1/responses", js, `{"model":"qwen","input":"hi"}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/responses/input_tokens", js, `{"model":"qwen","input":"hi"}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/chat/completions/input_tokens", js, `{"model":"qwen",` + msgs + `}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/rerank", js, `{"model":"qwen","query":"q","documents":["a","b"]}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/v1/audio/transcriptions", formType, form, []string{"Authorization", "Bearer k1"}},
		{"GET", "/props?model=qwen&x=1", "", "", []string{"Authorization", "Bearer k1"}},
		{"POST", "/api/chat", js, `{"model":"qwen2.5:7b",` + msgs + `}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/api/generate", js, `{"model":"qwen:latest","prompt":"hi","stream":false}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/api/embed", js, `{"model":"qwen","input":["a","b"]}`, []string{"Authorization", "Bearer k1"}},
		{"POST", "/api/embeddings", js, `{"model":"qwen","prompt":"a"}`, []string{"Authorization", "Bearer k1"}},
	}
	for i, tc := range tests {
		resp, body := send(t, ob, tc.method, tc.path, tc.ctype, tc.body, tc.hdr...)
		if resp.StatusCode != 200 || body != nodeAnswer {
			t.Errorf("%s %s: %d %s; want the other node's answer", tc.method, tc.path, resp.StatusCode, body)
			continue
		}
		got := node.requests()
		if len(got) != i+1 {
			t.Fatalf("%s %s: the node got %d requests, want %d", tc.method, tc.path, len(got), i+1)
		}
		want := relayed{method: tc.method, uri: tc.path, body: tc.body, contentType: tc.ctype, forwarded: "node-b"}
		if tc.hdr[0] == "Authorization" {
			want.auth = tc.hdr[1]
		} else {
			want.apiKey = tc.hdr[1]
		}
		if got[i] != want {
			t.Errorf("%s %s: the node got %+v, want %+v", tc.method, tc.path, got[i], want)
		}
	}
	if n := len(asked.get()); n != len(tests) {
		t.Errorf("RemoteFor asked %d times, want %d", n, len(tests))
	}
	for _, m := range asked.get() {
		if m != "qwen" {
			t.Errorf("RemoteFor asked about %q, want the configured name qwen", m)
		}
	}
	if a := ob.acquires.get(); len(a) != 0 {
		t.Fatalf("slots taken here: %v", a)
	}
}

// TestRemote_ServedHere: a request another node relayed (no loops), an
// Ollama load-only request, a node that cannot be reached and a node that
// refuses the client's key: each is served here, by this node's engine.
func TestRemote_ServedHere(t *testing.T) {
	t.Parallel()
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	chat := `{"model":"qwen",` + msgs + `}`
	refusing := newFakeNode(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"message":"bad key"}}`)
	})
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	live := newFakeNode(t, answerJSON)
	tests := []struct {
		name, url, path, body string
		hdr                   []string
	}{
		{"Forwarded", live.srv.URL, "/v1/chat/completions", chat, []string{api.ForwardedHeader, "node-c"}},
		{"ForwardedAnthropic", live.srv.URL, "/v1/messages", `{"model":"qwen","max_tokens":5,` + msgs + `}`, []string{api.ForwardedHeader, "node-c"}},
		{"ForwardedOllama", live.srv.URL, "/api/chat", `{"model":"qwen","stream":false,` + msgs + `}`, []string{api.ForwardedHeader, "node-c"}},
		{"OllamaLoadOnly", live.srv.URL, "/api/generate", `{"model":"qwen"}`, nil},
		{"Unreachable", dead.URL, "/v1/chat/completions", chat, nil},
		{"UnreachableAnthropic", dead.URL, "/v1/messages", `{"model":"qwen","max_tokens":5,` + msgs + `}`, nil},
		{"UnreachableOllama", dead.URL, "/api/chat", `{"model":"qwen","stream":false,` + msgs + `}`, nil},
		{"KeyRefused", refusing.srv.URL, "/v1/responses", `{"model":"qwen","input":"hi"}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ob, _ := setupRelay(t, tc.url)
			resp, body := send(t, ob, "POST", tc.path, "application/json", tc.body, tc.hdr...)
			if resp.StatusCode != 200 || strings.Contains(body, "node-a") {
				t.Fatalf("%d %s; want this node's answer", resp.StatusCode, body)
			}
			if a := ob.acquires.get(); len(a) != 1 || a[0] != "qwen 7" {
				t.Fatalf("slots taken here: %v; want one of qwen", a)
			}
		})
	}
	if got := live.requests(); len(got) != 0 {
		t.Fatalf("relayed %+v", got)
	}
}

// TestRemote_StreamsAndDoorErrors: the other node's stream reaches the
// client as it comes (the first event before the node sends the next), and
// a stream the node cuts short ends with an error in the door's shape; an
// error answer of the other node passes through as it is, Retry-After
// included.
func TestRemote_StreamsAndDoorErrors(t *testing.T) {
	t.Parallel()
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		door, path, body, ctype, first string
		wantErr                        func(t *testing.T, rest string)
	}{
		{"OpenAI", "/v1/chat/completions", `{"model":"qwen","stream":true,` + msgs + `}`, "text/event-stream",
			"data: {\"delta\":\"a\"}\n", func(t *testing.T, rest string) {
				line, ok := strings.CutPrefix(strings.TrimSpace(rest), "data: ")
				var e struct {
					Error struct{ Message, Type, Code string } `json:"error"`
				}
				if !ok || json.Unmarshal([]byte(line), &e) != nil || e.Error.Code != "engine_failed" || e.Error.Type != "server_error" {
					t.Fatalf("stream end %q: want an OpenAI error event", rest)
				}
			}},
		{"Anthropic", "/v1/messages", `{"model":"qwen","stream":true,"max_tokens":5,` + msgs + `}`, "text/event-stream",
			"event: content_block_delta\n", func(t *testing.T, rest string) {
				ev, data, _ := strings.Cut(strings.TrimSpace(rest), "\n")
				var e struct {
					Type  string
					Error struct{ Type, Message string }
				}
				data, ok := strings.CutPrefix(data, "data: ")
				if ev != "event: error" || !ok || json.Unmarshal([]byte(data), &e) != nil || e.Type != "error" || e.Error.Type != "api_error" {
					t.Fatalf("stream end %q: want an Anthropic error event", rest)
				}
			}},
		{"Ollama", "/api/chat", `{"model":"qwen",` + msgs + `}`, "application/x-ndjson",
			"{\"message\":{\"content\":\"a\"},\"done\":false}\n", func(t *testing.T, rest string) {
				var e map[string]any
				if json.Unmarshal([]byte(strings.TrimSpace(rest)), &e) != nil || len(e) != 1 || e["error"] == "" {
					t.Fatalf("stream end %q: want an Ollama error line", rest)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.door, func(t *testing.T) {
			t.Parallel()
			gate := make(chan struct{})
			node := newFakeNode(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				rc := http.NewResponseController(w)
				_, _ = io.WriteString(w, tc.first)
				_ = rc.Flush()
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
				conn, _, err := rc.Hijack()
				if err == nil {
					_ = conn.Close() // cut mid-stream
				}
			})
			ob, _ := setupRelay(t, node.srv.URL)
			resp, err := http.Post(ob.ts.URL+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype {
				t.Fatalf("%d %v", resp.StatusCode, resp.Header)
			}
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != tc.first {
				t.Fatalf("first line %q (%v), want %q before the node goes on", line, err, tc.first)
			}
			close(gate)
			rest, _ := io.ReadAll(br)
			tc.wantErr(t, string(rest))
			if a := ob.acquires.get(); len(a) != 0 {
				t.Fatalf("slots taken here: %v", a)
			}
		})
	}

	t.Run("ErrorPassesThrough", func(t *testing.T) {
		t.Parallel()
		const anthropicErr = `{"type":"error","error":{"type":"overloaded_error","message":"queue full"}}`
		node := newFakeNode(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, anthropicErr)
		})
		ob, _ := setupRelay(t, node.srv.URL)
		resp, body := send(t, ob, "POST", "/v1/messages", "application/json", `{"model":"qwen","max_tokens":5,`+msgs+`}`)
		if resp.StatusCode != 503 || body != anthropicErr || resp.Header.Get("Retry-After") != "5" {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
	})
}
