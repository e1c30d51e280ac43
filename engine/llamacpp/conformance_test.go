package llamacpp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// The conformance suite: llama-server's behaviours that VramCram relies on
// or must survive, checked against the stand-in always and against a real
// llama-server when LLAMA_SERVER (binary) and LLAMA_MODEL (a small GGUF
// without a pooling type) are set; LLAMA_EMBED_MODEL (a GGUF whose pooling
// type is mean) adds the embeddings checks. Where the two disagree the
// suite fails, so the stand-in is corrected rather than trusted.

// target is one llama-server to check.
type target struct {
	name       string
	bin        string
	model      string // a GGUF without a pooling type
	embedModel string // a GGUF with pooling type mean
	real       bool
}

func conformanceTargets(t *testing.T) []target {
	stand := filepath.Join(enginetest.StandIn(t), "llama-server")
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.gguf")
	if err := os.WriteFile(model, []byte("GGUF stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := []target{{name: "StandIn", bin: stand, model: model}}
	if bin, m := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL"); bin != "" && m != "" {
		ts = append(ts, target{name: "Real", bin: bin, model: m, embedModel: os.Getenv("LLAMA_EMBED_MODEL"), real: true})
	} else {
		t.Log("LLAMA_SERVER and LLAMA_MODEL not set: checking the stand-in only")
	}
	return ts
}

// launch starts tg with o (ModelPath defaults to tg.model); standIn are
// flags only the stand-in takes (its --test-* instruments).
func (tg target) launch(t *testing.T, o Options, standIn ...string) *runner.Process {
	t.Helper()
	if o.ModelPath == "" {
		o.ModelPath = tg.model
	}
	if !tg.real {
		o.Extra = append(o.Extra, standIn...)
	}
	o.GPULayers = 0
	return startReady(t, runner.Config{
		Name: "conf", Binary: tg.bin, ArgsFunc: ServerArgs(o), PortTakenMarker: portTakenMarker,
		ReadyTimeout: 60 * time.Second, HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 10 * time.Second,
		StopGrace: 2 * time.Second, Logger: enginetest.Logger(t),
	})
}

func TestConformance_LlamaServer(t *testing.T) {
	for _, tg := range conformanceTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			t.Run("ContextOverflow", func(t *testing.T) { t.Parallel(); checkContextOverflow(t, tg) })
			t.Run("TypeError", func(t *testing.T) { t.Parallel(); checkTypeError(t, tg) })
			t.Run("MidStreamError", func(t *testing.T) { t.Parallel(); checkMidStreamError(t, tg) })
			t.Run("Embeddings", func(t *testing.T) { t.Parallel(); checkEmbeddings(t, tg) })
			t.Run("SigtermInFlight", func(t *testing.T) { t.Parallel(); checkSigtermInFlight(t, tg) })
			t.Run("KeepAlive", func(t *testing.T) { t.Parallel(); checkKeepAlive(t, tg) })
		})
	}
}

// errorBody is llama-server's error answer.
type errorBody struct {
	Error struct {
		Code          int    `json:"code"`
		Message       string `json:"message"`
		Type          string `json:"type"`
		NPromptTokens int    `json:"n_prompt_tokens"`
		NCtx          int    `json:"n_ctx"`
	} `json:"error"`
}

// post sends body to path and returns the status, whether the server
// closes the connection after it ("Connection: close", which net/http
// moves from the headers to Close), and the body.
func post(t *testing.T, p *runner.Process, path, body string) (int, bool, []byte) {
	t.Helper()
	resp, err := http.Post(p.URL()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, resp.Close, b
}

func decodeError(t *testing.T, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error answer %q: %v", b, err)
	}
	return e
}

// checkContextOverflow: a prompt longer than a slot's context (-c divided
// by --parallel) is refused with 400 exceed_context_size_error carrying
// n_prompt_tokens and n_ctx, also for streams; the job client sees it as a
// rejection.
func checkContextOverflow(t *testing.T, tg target) {
	p := tg.launch(t, Options{ContextSize: 512, Parallel: 2})
	long := strings.TrimSpace(strings.Repeat("word ", 600))
	for _, stream := range []bool{false, true} {
		code, closes, b := post(t, p, "/completion", fmt.Sprintf(`{"prompt":%q,"n_predict":4,"stream":%v}`, long, stream))
		e := decodeError(t, b)
		t.Logf("stream=%v: %d %s", stream, code, b)
		if code != 400 || e.Error.Type != "exceed_context_size_error" || e.Error.NCtx != 256 || e.Error.NPromptTokens < 600 {
			t.Fatalf("stream=%v: %d %s; want 400 exceed_context_size_error with n_ctx 256 (512/2)", stream, code, b)
		}
		if !closes {
			t.Errorf("stream=%v: error answer without Connection: close", stream)
		}
	}
	// A prompt that fits its slot is served.
	if _, err := Complete(context.Background(), p, CompletionRequest{Prompt: "hello world", MaxTokens: 2}, nil); err != nil {
		t.Fatalf("short prompt: %v", err)
	}
	// Through the job path: rejected, not retried, with the engine's type.
	_, err := (&serverEngine{Process: p}).Run(context.Background(), engine.Job{ID: "j", Prompt: long}, func(engine.Progress) {})
	if !errors.Is(err, engine.ErrRejected) || !strings.Contains(err.Error(), "exceed_context_size_error") {
		t.Fatalf("Run = %v; want ErrRejected naming exceed_context_size_error", err)
	}
}

// checkTypeError: a request whose field has the wrong type is a client
// error, 400 invalid_request_error, and so a rejected job.
func checkTypeError(t *testing.T, tg target) {
	p := tg.launch(t, Options{ContextSize: 512, Parallel: 1})
	code, _, b := post(t, p, "/v1/chat/completions", `{"messages":"hello"}`)
	t.Logf("messages as a string: %d %s", code, b)
	if e := decodeError(t, b); code != 400 || e.Error.Type != "invalid_request_error" {
		t.Fatalf("messages as a string: %d %s; want 400 invalid_request_error", code, b)
	}
	code, _, b = post(t, p, "/completion", `{"prompt":"x","n_predict":"many"}`)
	t.Logf("n_predict as a string: %d %s", code, b)
	if e := decodeError(t, b); code != 400 || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "n_predict") {
		t.Fatalf("n_predict as a string: %d %s; want 400 invalid_request_error naming the field", code, b)
	}
	_, err := (&serverEngine{Process: p}).Forward(context.Background(), "/v1/chat/completions", []byte(`{"messages":"hello"}`))
	if !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("Forward = %v; want ErrRejected", err)
	}
	// A body that is not JSON at all is the server's parse exception: 500.
	if code, _, b := post(t, p, "/completion", `{"prompt":`); code != 500 {
		t.Fatalf("truncated JSON: %d %s; want 500", code, b)
	}
}

// checkMidStreamError: a generation that fails after it began ends its
// stream with data: {"error":{…}} and no final event or [DONE]; not
// streamed, the answer is 500. The stand-in does it on a flag; a real
// llama-server does it only by chance (random-weight chat output), so only
// the stand-in's side runs here and the shape is the real one (the
// server-context.cpp streaming loop, format_error).
func checkMidStreamError(t *testing.T, tg target) {
	if tg.real {
		t.Skip("a real llama-server fails mid-stream only by chance; the shape is checked on the stand-in")
	}
	p := tg.launch(t, Options{ContextSize: 512, Parallel: 1}, "--test-stream-error-after", "2")
	code, _, b := post(t, p, "/completion", `{"prompt":"one two three four","stream":true}`)
	events := sseData(string(b))
	if code != 200 || len(events) != 3 || !strings.HasPrefix(events[2], `{"error":`) {
		t.Fatalf("stream: %d %q; want two tokens, then an error event, nothing after", code, events)
	}
	if strings.Contains(string(b), "[DONE]") || strings.Contains(string(b), `"stop":true`) {
		t.Fatalf("stream has a final event: %s", b)
	}
	if code, _, b := post(t, p, "/completion", `{"prompt":"one two three four"}`); code != 500 {
		t.Fatalf("not streamed: %d %s; want 500", code, b)
	}
	// The job client: the text so far, and an engine failure (retried),
	// never a rejection.
	var got []string
	res, err := Complete(context.Background(), p, CompletionRequest{Prompt: "one two three four"}, func(s string) { got = append(got, s) })
	var se *StreamError
	if !errors.As(err, &se) || se.Code != 500 || len(got) != 2 || res.Text != "echo: one" {
		t.Fatalf("Complete = %+v, %v (pieces %q); want a *StreamError after 2 pieces", res, err, got)
	}
	_, err = (&serverEngine{Process: p}).Run(context.Background(), engine.Job{ID: "j", Prompt: "one two three"}, func(engine.Progress) {})
	if err == nil || errors.Is(err, engine.ErrRejected) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Run = %v; want an engine failure with the engine's message", err)
	}
}

func sseData(body string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

// checkEmbeddings: with --embeddings, a model without a pooling type is
// refused on the OpenAI route (400 "Pooling type 'none' is not OAI
// compatible"); with --pooling mean it answers; an input over the physical
// batch is 500.
func checkEmbeddings(t *testing.T, tg target) {
	t.Run("PoolingNone", func(t *testing.T) {
		t.Parallel()
		p := tg.launch(t, Options{ContextSize: 512, Parallel: 1, Embeddings: true})
		code, _, b := post(t, p, "/v1/embeddings", `{"input":"hello world"}`)
		t.Logf("pooling none: %d %s", code, b)
		if e := decodeError(t, b); code != 400 || !strings.Contains(e.Error.Message, "Pooling type 'none' is not OAI compatible") {
			t.Fatalf("%d %s; want the pooling refusal", code, b)
		}
	})
	t.Run("PoolingMean", func(t *testing.T) {
		t.Parallel()
		model := tg.model
		if tg.real {
			if tg.embedModel == "" {
				t.Skip("LLAMA_EMBED_MODEL not set")
			}
			model = tg.embedModel
		}
		p := tg.launch(t, Options{ModelPath: model, ContextSize: 512, Parallel: 1, Embeddings: true,
			Extra: []string{"--pooling", "mean", "-ub", "32", "-b", "32"}})
		code, _, b := post(t, p, "/v1/embeddings", `{"input":["hello world","bye"]}`)
		var ok struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
		}
		if code != 200 || json.Unmarshal(b, &ok) != nil || len(ok.Data) != 2 || len(ok.Data[0].Embedding) == 0 {
			t.Fatalf("%d %.300s; want two vectors", code, b)
		}
		long := strings.TrimSpace(strings.Repeat("word ", 100))
		code, _, b = post(t, p, "/v1/embeddings", fmt.Sprintf(`{"input":%q}`, long))
		t.Logf("over the physical batch: %d %s", code, b)
		if e := decodeError(t, b); code != 500 || !strings.Contains(e.Error.Message, "too large to process") {
			t.Fatalf("%d %s; want 500 too large to process", code, b)
		}
	})
}

// checkSigtermInFlight: SIGTERM with a request in flight stops its output
// (no final event), closes the listener, and the process exits with code 0:
// the stand-in only once the client has gone, the real server either then or
// after ending the stream itself.
func checkSigtermInFlight(t *testing.T, tg target) {
	o := Options{ContextSize: 32768, Parallel: 1}
	p := tg.launch(t, o, "--test-token-delay", "20ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"prompt":"once upon a time","n_predict":-1,"ignore_eos":true,"stream":true}`
	if !tg.real {
		body = fmt.Sprintf(`{"prompt":%q,"stream":true}`, strings.Repeat("tick ", 5000))
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL()+"/completion", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("first event: %v", err)
	}
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(p.URL(), "http://")
	enginetest.WaitFor(t, 10*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", host)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// The stand-in does not exit while its client is connected: watch it for
	// a while (a negative can only be observed over some time). The real
	// server mostly does the same, but its clean-up also finalizes the
	// stream sessions it knows (server-stream.cpp, stop_gc), and when the
	// request is one of them it ends the stream and exits first: either
	// way, with no final event and code 0.
	watch := time.Now().Add(time.Second)
	exitedFirst := false
	for !exitedFirst && time.Now().Before(watch) {
		if enginetest.ProcessGone(pid) {
			if !tg.real {
				t.Fatalf("engine exited with its client still connected: %v", p.Err())
			}
			exitedFirst = true
			t.Log("the real server ended the stream and exited before its client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !exitedFirst {
		cancel() // the client leaves
	}
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), `"stop":true`) || strings.Contains(string(rest), "[DONE]") {
		t.Fatalf("in-flight request got a final event after SIGTERM")
	}
	enginetest.WaitFor(t, 10*time.Second, "the engine to exit", func() bool { return enginetest.ProcessGone(pid) })
	<-p.Done()
	var ee *runner.ExitError
	if !errors.As(p.Err(), &ee) || ee.Code != 0 {
		t.Fatalf("exit: %v; want code 0", p.Err())
	}
}

// checkKeepAlive: success answers announce "timeout=5, max=100"; every
// error answer says Connection: close; an idle connection is closed by the
// server after 5 s; the 100th request of a connection is its last.
func checkKeepAlive(t *testing.T, tg target) {
	p := tg.launch(t, Options{ContextSize: 512, Parallel: 1})
	u, _ := url.Parse(p.URL())
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get := func(i int) *http.Response {
		t.Helper()
		if _, err := fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	first := get(1)
	if ka := first.Header.Get("Keep-Alive"); ka != "timeout=5, max=100" {
		t.Fatalf("Keep-Alive = %q", ka)
	}
	for i := 2; i < 100; i++ {
		if resp := get(i); resp.Close {
			t.Fatalf("request %d closed the connection", i)
		}
	}
	if last := get(100); !last.Close {
		t.Fatal("100th answer without Connection: close")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the 100th request: %v; want EOF", err)
	}

	// Idle: the server closes a connection idle for 5 s (read with a
	// deadline well beyond that).
	idle, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ibr := bufio.NewReader(idle)
	fmt.Fprintf(idle, "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", u.Host)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = idle.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v; want EOF (closed by the server)", err)
	}
}
