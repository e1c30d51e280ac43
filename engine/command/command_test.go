package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

func TestMain(m *testing.M) {
	code := m.Run()
	enginetest.Cleanup()
	os.Exit(code)
}

func TestExpand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{MacroPort: "8081", MacroHost: "127.0.0.1", MacroGPUs: ""}
	for _, tt := range []struct{ in, want, err string }{
		{"--port=${PORT}", "--port=8081", ""},
		{"${HOST}:${PORT}", "127.0.0.1:8081", ""},
		{"$HOME and $ alone", "$HOME and $ alone", ""},
		{"gpus=${GPUS}.", "gpus=.", ""},
		{"${FOO}", "", "${FOO}: unknown macro; known: ${PORT}, ${HOST}, ${MODEL_PATH}, ${MODEL_NAME}, ${GPUS}, ${CONTEXT_SIZE}"},
		{"x${PORT", "", "${PORT: unterminated macro"},
	} {
		got, err := Expand(tt.in, vars)
		switch {
		case tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)):
			t.Errorf("Expand(%q) error %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("Expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if (CheckTemplate(tt.in) != nil) != (tt.err != "") {
			t.Errorf("CheckTemplate(%q) disagrees with Expand", tt.in)
		}
	}
}

// launcher runs the stand-in (as an OpenAI server) through a cmd template.
func launcher(t *testing.T, o Options) *Launcher {
	t.Helper()
	bin := filepath.Join(enginetest.StandIn(t), "llama-server")
	if o.Cmd == nil {
		o.Cmd = []string{bin, "-m", "${MODEL_PATH}", "--host", "${HOST}", "--port", "${PORT}", "--alias", "${MODEL_NAME}",
			"-c", "${CONTEXT_SIZE}", "--test-load-delay", "20ms"}
	}
	if o.ModelPath == "" {
		o.ModelPath = enginetest.ModelFile(t, "tiny.gguf")
	}
	return &Launcher{
		Options: map[string]Options{"cmd": o},
		Runner: runner.Config{ReadyTimeout: 20 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
			HeartbeatTimeout: 5 * time.Second, StopGrace: 5 * time.Second, Logger: enginetest.Logger(t)},
	}
}

func start(t *testing.T, l *Launcher, sp engine.Spec) engine.Engine {
	t.Helper()
	eng, err := l.Launch(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := eng.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return eng
}

// procEnv reads a process's environment.
func procEnv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func TestLauncher_CmdTemplateAndEnv(t *testing.T) {
	t.Parallel()
	l := launcher(t, Options{Kind: engine.KindLLM, ContextSize: 512,
		Env: map[string]string{"CMD_TEST_MARK": "on-${PORT}-for-${MODEL_NAME}"}})
	sp := engine.Spec{Model: "cmd", Engine: Name, Kind: engine.KindLLM, Devices: []string{"GPU-x"}}
	if err := l.Check(sp); err != nil {
		t.Fatal(err)
	}
	eng := start(t, l, sp)
	u, ok := eng.(engine.URLer)
	if !ok {
		t.Fatal("a command engine serves HTTP: it must be an engine.URLer")
	}
	port := u.URL()[strings.LastIndexByte(u.URL(), ':')+1:]
	env := procEnv(t, eng.PID())
	for _, want := range []string{"CMD_TEST_MARK=on-" + port + "-for-cmd", "CUDA_VISIBLE_DEVICES=GPU-x"} {
		if !slices.Contains(env, want) {
			t.Fatalf("engine environment lacks %s", want)
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", eng.PID()))
	args := strings.Split(string(cmdline), "\x00")
	if !slices.Contains(args, port) || !slices.Contains(args, "512") || slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "${") }) {
		t.Fatalf("argv not expanded: %q", args)
	}

	// A durable endpoint/body job is relayed as is.
	f := eng.(engine.Forwarder)
	b, err := f.Forward(context.Background(), "/v1/chat/completions", []byte(`{"model":"cmd","messages":[{"role":"user","content":"hi there"}]}`))
	var chat struct {
		Model   string
		Choices []struct{ Message struct{ Content string } }
	}
	if err != nil || json.Unmarshal(b, &chat) != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Content != "echo: hi there" || chat.Model != "cmd" {
		t.Fatalf("forward: %s %v", b, err)
	}
	// A route it is not configured for is rejected; so is a 4xx answer.
	if _, err := f.Forward(context.Background(), "/v1/images/generations", []byte(`{}`)); !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("unlisted route: %v", err)
	}
	if _, err := f.Forward(context.Background(), "/v1/completions", []byte(`{"prompt":"x","stop":5}`)); !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("bad request: %v", err)
	}
	// A prompt job goes to /v1/completions, with the llama-server result shape.
	res, err := eng.Run(context.Background(), engine.Job{ID: "j", Model: "cmd", Prompt: "hello world", Params: json.RawMessage(`{"max_tokens":2}`)}, func(engine.Progress) {})
	// usage and the server's timings (a llama-server here) come with it.
	if err != nil || !strings.HasPrefix(string(res), `{"type":"llm","text":"echo: hello","tokens_predicted":2,"tokens_evaluated":2,"stop_type":"length",`+
		`"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4},"timings":{"prompt_n":2,`) {
		t.Fatalf("prompt job: %s %v", res, err)
	}
}

func TestLauncher_Routes(t *testing.T) {
	t.Parallel()
	l := &Launcher{Options: map[string]Options{
		"a": {Kind: engine.KindLLM, Cmd: []string{"x"}},
		"b": {Kind: engine.KindDiffusion, Cmd: []string{"x"}},
		"c": {Kind: engine.KindLLM, Cmd: []string{"x"}, Routes: []string{"/v1/audio/transcriptions"}},
	}}
	for model, want := range map[string][]string{
		"a": DefaultLLMRoutes, "b": DefaultDiffusionRoutes, "c": {"/v1/audio/transcriptions"}, "none": nil,
	} {
		if got := l.Routes(model); !slices.Equal(got, want) {
			t.Errorf("%s: routes %q, want %q", model, got, want)
		}
	}
}

func TestLauncher_CheckAndExit(t *testing.T) {
	t.Parallel()
	l := launcher(t, Options{Kind: engine.KindLLM, Cmd: []string{"/nonexistent/server", "--port", "${PORT}"}})
	sp := engine.Spec{Model: "cmd", Engine: Name}
	if err := l.Check(sp); err == nil || !strings.Contains(err.Error(), `command "/nonexistent/server" not found (config.cmd[0])`) {
		t.Fatalf("check: %v", err)
	}
	if _, err := l.Launch(context.Background(), sp); !errors.Is(err, runner.ErrBinaryNotFound) {
		t.Fatalf("launch: %v", err)
	}
	// An engine that fails to start is supervised like any other.
	bin := filepath.Join(enginetest.StandIn(t), "llama-server")
	l = launcher(t, Options{Kind: engine.KindLLM, Cmd: []string{bin, "-m", "${MODEL_PATH}", "--port", "${PORT}", "--test-fail-load"}})
	eng, err := l.Launch(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	var ee *runner.ExitError
	if err := eng.WaitReady(context.Background()); !errors.As(err, &ee) || ee.Code != 1 || !ee.BeforeReady {
		t.Fatalf("WaitReady = %v, want exit 1 before ready", err)
	}
	<-eng.Done()
}
