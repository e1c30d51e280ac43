package llamacpp

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// realLlama returns a config for a real llama-server, from LLAMA_SERVER
// (binary) and LLAMA_MODEL (a small GGUF), or skips.
func realLlama(t *testing.T, opts Options) runner.Config {
	t.Helper()
	bin, model := os.Getenv("LLAMA_SERVER"), os.Getenv("LLAMA_MODEL")
	if bin == "" || model == "" {
		t.Skip("LLAMA_SERVER and LLAMA_MODEL not set")
	}
	if opts.ModelPath == "" {
		opts.ModelPath = model
	}
	return runner.Config{
		Name:              "real",
		Binary:            bin,
		ArgsFunc:          ServerArgs(opts),
		PortTakenMarker:   portTakenMarker,
		ReadyTimeout:      60 * time.Second,
		HeartbeatInterval: 200 * time.Millisecond,
		HeartbeatTimeout:  10 * time.Second,
		StopGrace:         10 * time.Second,
		Logger:            enginetest.Logger(t),
	}
}

func TestLlamaServer_Real(t *testing.T) {
	opts := Options{ContextSize: 2048, GPULayers: 0, Parallel: 2}

	t.Run("CompleteAndStop", func(t *testing.T) {
		begin := time.Now()
		p := startReady(t, realLlama(t, opts))
		t.Logf("ready after %s", time.Since(begin))
		ctx := context.Background()
		seed := int64(1)
		req := CompletionRequest{Prompt: "hello world", MaxTokens: 8, Temperature: ptr(0.0), Seed: &seed}
		res, err := Complete(ctx, p, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("non-stream: %+v", res)
		if res.TokensPredicted != 8 || res.StopType != "limit" || res.TokensEvaluated == 0 {
			t.Fatalf("non-stream result %+v", res)
		}
		var pieces []string
		sres, err := Complete(ctx, p, req, func(s string) { pieces = append(pieces, s) })
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("stream: %d pieces, %+v", len(pieces), sres)
		if strings.Join(pieces, "") != sres.Text || sres.TokensPredicted != 8 || sres.StopType != "limit" {
			t.Fatalf("stream result %+v, pieces %q", sres, pieces)
		}
		if sres.Text != res.Text {
			t.Logf("note: greedy stream and non-stream texts differ: %q vs %q", sres.Text, res.Text)
		}
		begin = time.Now()
		if err := p.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("idle stop took %s", time.Since(begin))
		if !errors.Is(p.Err(), runner.ErrStopped) {
			t.Fatalf("Err = %v", p.Err())
		}
	})

	t.Run("CancelMidStream", func(t *testing.T) {
		p := startReady(t, realLlama(t, opts))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		n := 0
		_, err := Complete(ctx, p, CompletionRequest{Prompt: "once upon a time", MaxTokens: 1000}, func(string) {
			if n++; n == 3 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		res, err := Complete(context.Background(), p, CompletionRequest{Prompt: "x", MaxTokens: 2}, nil)
		if err != nil || res.TokensPredicted != 2 {
			t.Fatalf("after cancel: %+v %v", res, err)
		}
	})

	t.Run("MissingModel", func(t *testing.T) {
		cfg := realLlama(t, Options{ModelPath: "/nonexistent/model.gguf", GPULayers: 0})
		begin := time.Now()
		p := start(t, cfg)
		err := p.WaitReady(context.Background())
		t.Logf("missing model: %v after %s", err, time.Since(begin))
		var ee *runner.ExitError
		// The reason may be missing from the output: llama-server's async
		// logger loses its last lines (under load, all of them) at exit.
		if !errors.As(err, &ee) || ee.Code != 1 || !ee.BeforeReady {
			t.Fatalf("WaitReady = %v", err)
		}
		t.Logf("LoadFailed() = %v", LoadFailed(ee))
	})

	t.Run("PortTaken", func(t *testing.T) {
		cfg := realLlama(t, opts)
		base := cfg.ArgsFunc
		var calls atomic.Int32
		var held net.Listener
		cfg.ArgsFunc = func(port int) []string {
			if calls.Add(1) == 1 {
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
				if err != nil {
					t.Errorf("hold port: %v", err)
				}
				held = l
			}
			return base(port)
		}
		p := startReady(t, cfg)
		if held != nil {
			held.Close()
		}
		// The bind message itself may be missing: llama-server's async
		// logger can lose everything on a fast exit.
		t.Logf("spawns %d, tail has bind message: %v", calls.Load(),
			strings.Contains(strings.Join(p.Tail(), "\n"), portTakenMarker))
		if calls.Load() != 2 || p.State() != runner.StateReady {
			t.Fatalf("calls %d, state %s", calls.Load(), p.State())
		}
	})

	t.Run("StopInFlight", func(t *testing.T) {
		cfg := realLlama(t, Options{ContextSize: 2048, GPULayers: 0, Parallel: 1})
		cfg.StopGrace = 500 * time.Millisecond
		p := startReady(t, cfg)
		first := make(chan struct{})
		var once sync.Once
		errCh := make(chan error, 1)
		go func() {
			_, err := Complete(context.Background(), p, CompletionRequest{Prompt: "once upon a time", MaxTokens: 2000}, func(string) {
				once.Do(func() { close(first) })
			})
			errCh <- err
		}()
		<-first
		begin := time.Now()
		if err := p.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		took := time.Since(begin)
		err := <-errCh
		t.Logf("stop with a request in flight took %s (grace %s); Complete: %v; tail: %s", took, cfg.StopGrace, err, strings.Join(p.Tail(), " | "))
	})
}
