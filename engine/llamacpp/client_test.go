package llamacpp

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

func TestMain(m *testing.M) {
	code := m.Run()
	enginetest.Cleanup()
	os.Exit(code)
}

// testConfig runs the stand-in as llama-server with extra flags.
func testConfig(t *testing.T, extra ...string) runner.Config {
	t.Helper()
	return runner.Config{
		Name:              "llama-a",
		Binary:            filepath.Join(enginetest.StandIn(t), "llama-server"),
		ArgsFunc:          ServerArgs(Options{ModelPath: enginetest.ModelFile(t, "tiny.gguf"), ContextSize: 512, GPULayers: 0, Parallel: 2, Extra: extra}),
		PortTakenMarker:   portTakenMarker,
		ReadyTimeout:      20 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  5 * time.Second,
		StopGrace:         5 * time.Second,
		Logger:            enginetest.Logger(t),
	}
}

// start starts cfg and registers a cleanup that stops it.
func start(t *testing.T, cfg runner.Config) *runner.Process {
	t.Helper()
	p, err := runner.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return p
}

// startReady starts cfg and waits until it is ready.
func startReady(t *testing.T, cfg runner.Config) *runner.Process {
	t.Helper()
	p := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, strings.Join(p.Tail(), "\n"))
	}
	return p
}

func ptr[T any](v T) *T { return &v }

func TestProcess_Complete(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t))
	ctx := context.Background()

	tests := []struct {
		name      string
		req       CompletionRequest
		text      string
		predicted int
		stopType  string
	}{
		{"Plain", CompletionRequest{Prompt: "hello world"}, "echo: hello world", 3, "eos"},
		{"MaxTokens", CompletionRequest{Prompt: "hello world", MaxTokens: 2}, "echo: hello", 2, "limit"},
		{"StopWord", CompletionRequest{Prompt: "hello big world", Stop: []string{"big"}}, "echo: hello ", 3, "word"},
		{"Sampling", CompletionRequest{Prompt: "a", Temperature: ptr(0.5), TopP: ptr(0.9), Seed: ptr(int64(7))}, "echo: a", 2, "eos"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				var pieces []string
				var onToken func(string)
				if stream {
					onToken = func(s string) { pieces = append(pieces, s) }
				}
				res, err := Complete(ctx, p, tt.req, onToken)
				if err != nil {
					t.Fatalf("stream=%v: %v", stream, err)
				}
				if res.Text != tt.text || res.TokensPredicted != tt.predicted || res.StopType != tt.stopType {
					t.Fatalf("stream=%v: got %+v, want text %q, %d predicted, stop %q", stream, res, tt.text, tt.predicted, tt.stopType)
				}
				if res.TokensEvaluated != len(strings.Fields(tt.req.Prompt)) {
					t.Fatalf("stream=%v: TokensEvaluated %d", stream, res.TokensEvaluated)
				}
				if stream && strings.Join(pieces, "") != res.Text {
					t.Fatalf("pieces %q do not concatenate to %q", pieces, res.Text)
				}
			}
		})
	}
}

func TestProcess_CompleteStreamOrder(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--test-token-delay", "5ms"))
	var pieces []string
	res, err := Complete(context.Background(), p, CompletionRequest{Prompt: "one two three four"}, func(s string) {
		pieces = append(pieces, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"echo:", " one", " two", " three", " four"}
	if strings.Join(pieces, "|") != strings.Join(want, "|") {
		t.Fatalf("pieces %q, want %q", pieces, want)
	}
	if res.Text != "echo: one two three four" || res.Timings.PredictedN != 5 {
		t.Fatalf("result %+v", res)
	}
}

func TestProcess_CompleteCancelMidStream(t *testing.T) {
	t.Parallel()
	// One slot: the second request can only run promptly if the engine
	// stopped generating for the cancelled one.
	cfg := testConfig(t, "--test-token-delay", "50ms", "--parallel", "1")
	p := startReady(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prompt := strings.Repeat("word ", 200) // 10 s of tokens
	var got []string
	begin := time.Now()
	res, err := Complete(ctx, p, CompletionRequest{Prompt: prompt}, func(s string) {
		got = append(got, s)
		if len(got) == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if time.Since(begin) > 3*time.Second {
		t.Fatalf("cancel took %s", time.Since(begin))
	}
	if res.Text != "echo: word" {
		t.Fatalf("partial text %q", res.Text)
	}
	begin = time.Now()
	res, err = Complete(context.Background(), p, CompletionRequest{Prompt: "x"}, nil)
	if err != nil || res.Text != "echo: x" {
		t.Fatalf("after cancel: %+v %v", res, err)
	}
	if time.Since(begin) > 3*time.Second {
		t.Fatalf("slot not freed: next request took %s", time.Since(begin))
	}
}

func TestProcess_CompleteHTTPError(t *testing.T) {
	t.Parallel()
	p := start(t, testConfig(t, "--test-load-delay", "1m"))
	enginetest.WaitFor(t, 10*time.Second, "engine listening", func() bool {
		return strings.Contains(strings.Join(p.Tail(), "\n"), "HTTP server is listening")
	})
	_, err := Complete(context.Background(), p, CompletionRequest{Prompt: "x"}, nil)
	var he *runner.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || he.Message != "Loading model" {
		t.Fatalf("err = %v (%#v), want HTTPError 503 Loading model", err, he)
	}
	if !strings.Contains(err.Error(), "Loading model") {
		t.Fatalf("message %q lacks the engine's message", err)
	}
}

func TestServerArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"Full", Options{ModelPath: "/m/a.gguf", ContextSize: 4096, GPULayers: 99, Parallel: 2},
			"-m /m/a.gguf --host 127.0.0.1 --port 8081 -c 4096 -ngl 99 --parallel 2"},
		{"CPUOnly", Options{ModelPath: "a", GPULayers: 0},
			"-m a --host 127.0.0.1 --port 8081 -ngl 0"},
		{"EngineDefaults", Options{ModelPath: "a", GPULayers: -1},
			"-m a --host 127.0.0.1 --port 8081"},
		{"EmbeddingsExtra", Options{ModelPath: "a", GPULayers: -1, Embeddings: true, Extra: []string{"--flash-attn", "on", "-c", "8192"}},
			"-m a --host 127.0.0.1 --port 8081 --embeddings --flash-attn on -c 8192"},
		{"Alias", Options{ModelPath: "/m/a.gguf", GPULayers: -1, Alias: "alpha", Extra: []string{"-a", "mine"}},
			"-m /m/a.gguf --host 127.0.0.1 --port 8081 --alias alpha -a mine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ServerArgs(tt.opts)
			if got := strings.Join(f(8081), " "); got != tt.want {
				t.Fatalf("args\n got %s\nwant %s", got, tt.want)
			}
			if got := f(9000); got[5] != "9000" {
				t.Fatalf("port not applied: %q", got)
			}
		})
	}
	// The options are copied: later changes to Extra do not leak in.
	extra := []string{"--x"}
	f := ServerArgs(Options{ModelPath: "a", GPULayers: -1, Extra: extra})
	extra[0] = "--y"
	if got := f(1); got[len(got)-1] != "--x" {
		t.Fatalf("Extra aliased: %q", got)
	}
}
