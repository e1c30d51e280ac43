// Command testengine is a stand-in for llama.cpp's llama-server, for tests.
// It takes the same flags, serves the same endpoints in the same JSON and SSE
// shapes, and has the same readiness behaviour, but it loads nothing and
// "generates" a fixed, deterministic answer. Flags of its own (--test-*) make
// it load slowly, fail, crash mid-job, hang or ignore SIGTERM.
//
// # Flags
//
// llama-server flags it reads: -m/--model PATH (must exist, any content; if
// absent the model is called "testengine"), -a/--alias NAME, --host (default
// 127.0.0.1), --port (default 8080; 0 = any), -c/--ctx-size N,
// -ngl/--gpu-layers/--n-gpu-layers N|auto|all, -np/--parallel N (slots,
// default 4), --embeddings, --rerank/--reranking, --metrics. Any other flag is tolerated: --foo,
// --foo=value, and --foo value (a following argument that does not start with
// '-' is taken as its value).
//
// Test flags:
//
//	--test-load-delay D        time spent "loading" (default 0)
//	--test-fail-load           after the load delay: "exiting due to model loading error", exit 1
//	--test-token-delay D       time per generated token (default 0)
//	--test-crash-after N       exit 2 while serving the N-th generation request, mid-stream
//	--test-hang-after N        after the N-th generation request has been answered, answer
//	                           nothing any more (/health included): handlers block until the
//	                           client goes away
//	--test-ignore-sigterm      log SIGTERM/SIGINT and carry on
//	--test-sigterm-exits       exit 0 at once on SIGTERM, even with requests in flight
//	--test-stream-error-after N  end every generation after N tokens with llama-server's
//	                           mid-stream error: an SSE error event and no final event or
//	                           [DONE] when streamed, 500 server_error when not
//	--test-fork-grandchild     start a copy of itself that sleeps (ignoring SIGTERM) in the
//	                           same process group; logs "test: forked grandchild pid N"
//	--test-exit-after D        exit 3 after D
//	--test-gpu-mb N            while "loading", start --test-gpu-helper PATH N (python3) in
//	                           this process group and wait until it prints that it holds
//	                           N MiB of GPU memory (scripts/gpu-hold.py; GPU checks only)
//
// SIGTERM or SIGINT behaves as in the real server: when idle it exits 0 at
// once; with requests in flight generation stops, the listener closes, those
// requests never get an answer, and the process exits 0 only once their
// clients have gone; a second signal exits 1 at once.
//
// Connections: idle keep-alive connections are closed after 5 s, a
// connection is closed after its 100th request, and every error answer
// (status 400 or more) says "Connection: close" and closes it (cpp-httplib's
// defaults in llama-server).
//
// Limits (limits.go): a prompt that does not fit its slot's context
// (-c divided by --parallel, padded as llama.cpp does) gets 400
// exceed_context_size_error, streamed or not. A field of the wrong type is
// 400 invalid_request_error; a body that is not JSON, 500.
//
// # The generation rule
//
// The answer to a prompt is made of the words of "echo: " + prompt:
//
//	tokens  := strings.Fields("echo: " + prompt)
//	n       := len(tokens), or n_predict (max_tokens) if that is > 0 and smaller
//	content := strings.Join(tokens[:n], " ")
//
// so "hello world" gives "echo: hello world" (3 tokens predicted; the prompt
// counts len(strings.Fields(prompt)) tokens evaluated). stop_type is "limit"
// when n_predict cut the answer short, else "eos". A stop string ends the
// answer just before its first occurrence (stop_type "word"). Streamed, the
// first token comes as is and each later one with a leading space, one SSE
// event per token, so the pieces concatenate to the non-stream content (text
// that might be the start of a stop string is held back, as llama-server
// does). For chat, the prompt is the message contents joined by "\n".
// Sampling parameters (temperature, seed, …) are accepted and ignored.
//
// /v1/messages (Anthropic) and /v1/responses follow the same rule in their
// own shapes; /infill's prompt is input_prefix, prompt and input_suffix; a
// chat request with "tools" is answered (not streamed) with a call of the
// first tool whose arguments are {"tools": <the tools as received>}. The
// utility routes (/tokenize, /detokenize, /apply-template, token counting,
// /rerank with --reranking, /v1/audio/transcriptions, /props, /slots,
// /lora-adapters) are in routes_tools.go.
//
// Embeddings (with --embeddings) are 16 floats derived from an FNV hash of
// the input, L2-normalised: the same input gives the same vector. As in the
// real server, the OpenAI route /v1/embeddings refuses a model whose pooling
// is none (400 "Pooling type 'none' is not OAI compatible"): the pooling is
// --pooling, else the GGUF's own (a stand-in model file has none); an input
// of more tokens than the physical batch (-ub, default 512) gets 500.
//
// Run as sd, sd-cli or sd-server (by name or --test-role), it plays
// stable-diffusion.cpp's programs instead; see sd.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the parsed command-line flags.
type options struct {
	model      string
	alias      string
	host       string
	port       int
	ctxSize    int
	gpuLayers  string
	parallel   int
	embeddings bool
	reranking  bool
	metrics    bool
	pooling    string // --pooling; "" = the model's own (none for stand-in files)
	// kvUnified: one KV cache shared by all slots (llama-server's default
	// when --parallel is left out), so each slot may use the whole context.
	kvUnified   bool
	parallelSet bool // --parallel given explicitly (not auto)
	ubatch      int  // -ub/--ubatch-size: the physical batch (default 512)

	loadDelay        time.Duration
	failLoad         bool
	tokenDelay       time.Duration
	crashAfter       int
	hangAfter        int
	ignoreSigterm    bool
	forkGrandchild   bool
	exitAfter        time.Duration
	streamErrorAfter int    // --test-stream-error-after: end each generation with an error event after N tokens
	sigtermExits     bool   // --test-sigterm-exits: exit at once on SIGTERM even with requests in flight
	grandchild       bool   // hidden: be the grandchild
	gpuMB            int    // hold this much GPU memory through gpuHelper
	gpuHelper        string // script that holds N MiB (scripts/gpu-hold.py)
}

func defaultOptions() options {
	return options{host: "127.0.0.1", port: 8080, parallel: 4, gpuLayers: "auto", ubatch: 512}
}

// parseArgs reads llama-server style flags, tolerating unknown ones.
func parseArgs(args []string) (options, error) {
	o := defaultOptions()
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			continue // stray positional argument: llama-server would reject it; we tolerate
		}
		name, inline, hasInline := strings.Cut(arg, "=")
		// value returns the flag's value: inline, or the next argument.
		value := func() (string, error) {
			if hasInline {
				return inline, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("error: expected value for argument: %s", name)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch name {
		case "-m", "--model":
			o.model, err = value()
		case "-a", "--alias":
			o.alias, err = value()
		case "--host":
			o.host, err = value()
		case "--port":
			if v, err = value(); err == nil {
				o.port, err = strconv.Atoi(v)
			}
		case "-c", "--ctx-size":
			if v, err = value(); err == nil {
				o.ctxSize, err = strconv.Atoi(v)
			}
		case "-ngl", "--gpu-layers", "--n-gpu-layers":
			if v, err = value(); err == nil {
				o.gpuLayers = v
				if v != "auto" && v != "all" {
					_, err = strconv.Atoi(v)
				}
			}
		case "-np", "--parallel":
			if v, err = value(); err == nil {
				o.parallel, err = strconv.Atoi(v)
				if err == nil && o.parallel == 0 {
					err = errors.New("invalid value for n_parallel")
				}
				if o.parallel < 0 {
					o.parallel = 4 // -1 = auto
				}
				o.parallelSet = o.parallel > 0 && v != "-1"
			}
		case "--embedding", "--embeddings":
			o.embeddings = true
		case "--rerank", "--reranking":
			o.embeddings, o.reranking = true, true
		case "--metrics":
			o.metrics = true
		case "--pooling":
			if v, err = value(); err == nil {
				o.pooling = v
				if !slices.Contains([]string{"none", "mean", "cls", "last", "rank"}, v) {
					err = fmt.Errorf("invalid value for --pooling: %s", v)
				}
			}
		case "-ub", "--ubatch-size":
			if v, err = value(); err == nil {
				o.ubatch, err = strconv.Atoi(v)
			}
		case "-kvu", "--kv-unified":
			o.kvUnified = true
		case "-no-kvu", "--no-kv-unified":
			o.kvUnified = false
		case "--test-stream-error-after":
			if v, err = value(); err == nil {
				o.streamErrorAfter, err = strconv.Atoi(v)
			}
		case "--test-sigterm-exits":
			o.sigtermExits = true
		case "--test-load-delay":
			if v, err = value(); err == nil {
				o.loadDelay, err = time.ParseDuration(v)
			}
		case "--test-fail-load":
			o.failLoad = true
		case "--test-token-delay":
			if v, err = value(); err == nil {
				o.tokenDelay, err = time.ParseDuration(v)
			}
		case "--test-crash-after":
			if v, err = value(); err == nil {
				o.crashAfter, err = strconv.Atoi(v)
			}
		case "--test-hang-after":
			if v, err = value(); err == nil {
				o.hangAfter, err = strconv.Atoi(v)
			}
		case "--test-ignore-sigterm":
			o.ignoreSigterm = true
		case "--test-sigterm-waits-clients":
			// The default now; kept so that old argv still parse.
		case "--test-fork-grandchild":
			o.forkGrandchild = true
		case "--test-exit-after":
			if v, err = value(); err == nil {
				o.exitAfter, err = time.ParseDuration(v)
			}
		case "--test-grandchild":
			o.grandchild = true
		case "--test-gpu-mb":
			if v, err = value(); err == nil {
				o.gpuMB, err = strconv.Atoi(v)
			}
		case "--test-gpu-helper":
			o.gpuHelper, err = value()
		default:
			// Unknown flag: take the next argument as its value unless it
			// looks like a flag itself.
			if !hasInline && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
		}
		if err != nil {
			return o, fmt.Errorf("error while handling argument %q: %w", name, err)
		}
	}
	return o, nil
}

// logf writes one llama-ish log line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func main() {
	if role := sdRole(os.Args); role != "" {
		os.Exit(runSD(role, os.Args[1:])) // stable-diffusion.cpp roles: see sd.go
	}
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		logf("%v", err)
		logf("to show complete usage, run with -h")
		os.Exit(1)
	}
	if o.grandchild {
		runGrandchild()
		return
	}
	os.Exit(run(o))
}

// runGrandchild sleeps until killed, ignoring SIGTERM, so only a group
// SIGKILL gets rid of it.
func runGrandchild() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	for {
		time.Sleep(time.Hour)
	}
}

func run(o options) int {
	logf("build: 0 (testengine) with go for linux")
	logf("system info: n_threads = 1 | testengine")
	logf("main: n_parallel = %d, n_ctx = %d, n_gpu_layers = %s", o.parallel, o.ctxSize, o.gpuLayers)

	if o.forkGrandchild {
		if err := forkGrandchild(); err != nil {
			logf("test: fork grandchild: %v", err)
			return 1
		}
	}

	// Like llama-server: bind and serve (503 "Loading model") before loading.
	ln, err := net.Listen("tcp", net.JoinHostPort(o.host, strconv.Itoa(o.port)))
	if err != nil {
		logf("srv         start: couldn't bind HTTP server socket, hostname: %s, port: %d", o.host, o.port)
		logf("srv    operator(): operator(): cleaning up before exit...")
		logf("srv  llama_server: exiting due to HTTP server error")
		return 1
	}
	port := ln.Addr().(*net.TCPAddr).Port
	logf("main: HTTP server is listening, hostname: %s, port: %d, http threads: %d", o.host, port, o.parallel+1)
	logf("srv    load_model: loading model '%s'", o.model)

	s := newServer(o)
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: keepAliveTimeout, ConnContext: connContext}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !s.terminating.Load() {
			logf("srv  main: HTTP server error: %v", err)
			os.Exit(1)
		}
	}()

	if o.exitAfter > 0 {
		time.AfterFunc(o.exitAfter, func() {
			logf("test: exiting with code 3 after %s (--test-exit-after)", o.exitAfter)
			os.Exit(3)
		})
	}
	sigCh := make(chan os.Signal, 2)
	signal.Notify(sigCh, syscall.SIGTERM, syscall.SIGINT)

	// Load: the file must exist (checked at once, as llama-server's open
	// fails within milliseconds), then the delay, then maybe fail.
	if o.model != "" {
		if _, err := os.Stat(o.model); err != nil {
			logf("gguf_init_from_file: failed to open GGUF file '%s' (%v)", o.model, errors.Unwrap(err))
			logf("llama_model_load: error loading model: llama_model_loader: failed to load model from %s", o.model)
			logf("llama_model_load_from_file_impl: failed to load model")
			logf("srv    load_model: failed to load model, '%s'", o.model)
			logf("srv    operator(): operator(): cleaning up before exit...")
			logf("srv  llama_server: exiting due to model loading error")
			return 1
		}
	}
	if !sleepOrSignal(o.loadDelay, sigCh, o) {
		return 0
	}
	if o.gpuMB > 0 {
		if err := holdGPU(o.gpuHelper, o.gpuMB); err != nil {
			logf("llama_model_load: error loading model: test: --test-gpu-mb: %v", err)
			logf("srv  llama_server: exiting due to model loading error")
			return 1
		}
	}
	if o.failLoad {
		logf("llama_model_load: error loading model: test: --test-fail-load")
		logf("srv    load_model: failed to load model, '%s'", o.model)
		logf("srv    operator(): operator(): cleaning up before exit...")
		logf("srv  llama_server: exiting due to model loading error")
		return 1
	}
	s.ready.Store(true)
	logf("srv  llama_server: model loaded")
	logf("srv  llama_server: listening on http://%s", net.JoinHostPort(o.host, strconv.Itoa(port)))
	logf("srv  update_slots: all slots are idle")

	for sig := range sigCh {
		switch {
		case o.ignoreSigterm:
			logf("test: received %v, ignoring it (--test-ignore-sigterm)", sig)
		case s.terminating.Load():
			logf("Received second interrupt, terminating immediately.")
			return 1
		case o.sigtermExits:
			logf("srv    operator(): operator(): cleaning up before exit... (%v)", sig)
			shutdown(srv)
			return 0
		default:
			// llama-server: generation stops, the listener closes at once,
			// in-flight requests never get an answer, and the process
			// exits only once their clients have gone.
			logf("srv    operator(): operator(): cleaning up before exit...")
			s.terminating.Store(true)
			_ = ln.Close()
			srv.SetKeepAlivesEnabled(false) // closes idle connections too
			go func() {
				s.inflight.Wait() // requests return only when their clients go away
				shutdown(srv)
				os.Exit(0)
			}()
		}
	}
	return 0
}

// sleepOrSignal waits d while "loading"; a signal then ends the process
// (reported as false) unless SIGTERM is ignored.
func sleepOrSignal(d time.Duration, sigCh <-chan os.Signal, o options) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case sig := <-sigCh:
			if o.ignoreSigterm {
				logf("test: received %v while loading, ignoring it (--test-ignore-sigterm)", sig)
				continue
			}
			logf("srv    operator(): operator(): cleaning up before exit... (%v while loading)", sig)
			return false
		}
	}
}

// shutdown closes the listener and idle connections without waiting for
// busy ones (they are cut when the process exits).
func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

// forkGrandchild starts a sleeping copy of this program in our process
// group, sharing our stderr (so it also holds the parent's output pipe).
func forkGrandchild() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "--test-grandchild")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	logf("test: forked grandchild pid %d (%s)", cmd.Process.Pid, filepath.Base(self))
	return cmd.Process.Release()
}
