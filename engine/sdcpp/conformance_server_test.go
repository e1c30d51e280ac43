package sdcpp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
)

// The conformance checks of a running sd-server; they need a model that
// loads (SD_MODEL for the real one: any checkpoint, zero weights will do).

// sdServerProc is an sd-server started by a check; listening is closed once
// it has logged "listening on".
type sdServerProc struct {
	cmd       *exec.Cmd
	port      int
	listening chan struct{}
	done      chan struct{}
}

func startSDServer(t *testing.T, tg sdTarget, port int) *sdServerProc {
	t.Helper()
	cmd := exec.Command(tg.server, "-m", tg.model, "--listen-ip", "127.0.0.1", "--listen-port", strconv.Itoa(port), "--steps", "1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sdServerProc{cmd: cmd, port: port, listening: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			if !seen && strings.Contains(sc.Text(), "listening on") {
				seen = true
				close(s.listening)
			}
		}
		_ = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
	})
	return s
}

// get answers GET path on port: status and body ("" and -1 when no answer).
func get(port int, path string) (int, string) {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
	if err != nil {
		return -1, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitListening(t *testing.T, s *sdServerProc) {
	t.Helper()
	select {
	case <-s.listening:
	case <-s.done:
		t.Fatalf("sd-server exited before listening: %v", s.cmd.ProcessState)
	case <-time.After(120 * time.Second):
		t.Fatal("sd-server not listening after 120s")
	}
	enginetest.WaitFor(t, 30*time.Second, "an answer on /v1/models", func() bool { c, _ := get(s.port, "/v1/models"); return c == 200 })
}

// checkServerRoutes: the OpenAI routes VramCram uses, their answers and
// error shapes, a generation through GenerateImages, and the strict
// validation (a negative CFG scale refused, steps clamped, not refused).
func checkServerRoutes(t *testing.T, tg sdTarget) {
	if tg.server == "" || tg.model == "" {
		t.Skip("SD_SERVER and SD_MODEL not set")
	}
	p := start(t, runner.Config{
		Name: "conf", Binary: tg.server, ReadyPath: ServerReadyPath, ReadyTimeout: 120 * time.Second,
		HeartbeatInterval: time.Second, HeartbeatTimeout: 60 * time.Second, StopGrace: 5 * time.Second,
		ArgsFunc: ServerArgs(ServerOptions{Files: Files{Model: tg.model}, Steps: 1}), Logger: enginetest.Logger(t),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if code, body := get(p.Port(), ServerReadyPath); code != 200 || body != `{"data":[{"id":"sd-cpp-local","object":"model","owned_by":"local"}]}` {
		t.Errorf("GET /v1/models: %d %s", code, body)
	}
	if code, _ := get(p.Port(), "/"); code != 200 {
		t.Errorf("GET /: %d", code)
	}
	post := func(body string) (int, map[string]any) {
		resp, err := http.Post(p.URL()+"/v1/images/generations", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for _, c := range []struct {
		body, err string
		code      int
	}{
		{"", "empty body", 400},
		{`{"prompt":""}`, "prompt required", 400},
		{`{"prompt":"x <sd_cpp_extra_args>{bad</sd_cpp_extra_args>"}`, "invalid sd_cpp_extra_args", 400},
		{`{"prompt":"x <sd_cpp_extra_args>{\"sample_params\":{\"guidance\":{\"txt_cfg\":-1}}}</sd_cpp_extra_args>"}`, "invalid params", 400},
		{`{"prompt":"x","output_format":"gif"}`, "invalid output_format, must be one of [", 400},
		{`{`, "server_error", 500},
	} {
		code, m := post(c.body)
		if e, _ := m["error"].(string); code != c.code || !strings.HasPrefix(e, c.err) {
			t.Errorf("POST %q: %d %v; want %d {\"error\":%q…}", c.body, code, m, c.code, c.err)
		}
	}
	images, err := GenerateImages(ctx, p, ImageRequest{Prompt: "x", Width: 64, Height: 64, Steps: 0, CFGScale: 1, Seed: 1, Count: 2})
	if err != nil || len(images) != 2 {
		t.Fatalf("generate (steps 0, clamped to 1): %d images, %v", len(images), err)
	}
	for i, img := range images {
		if cfg, err := png.DecodeConfig(bytes.NewReader(img)); err != nil || cfg.Width != 64 || cfg.Height != 64 {
			t.Errorf("image %d: %+v %v; want a 64x64 PNG", i, cfg, err)
		}
	}
}

// checkServerSharedPort: sd-server binds with SO_REUSEPORT, so a second
// one on the port of a first does not fail: both listen, and once the
// first is gone the second answers.
func checkServerSharedPort(t *testing.T, tg sdTarget) {
	if tg.server == "" || tg.model == "" {
		t.Skip("SD_SERVER and SD_MODEL not set")
	}
	first := startSDServer(t, tg, freePort(t))
	waitListening(t, first)
	second := startSDServer(t, tg, first.port)
	waitListening(t, second)
	_ = first.cmd.Process.Kill()
	<-first.done
	enginetest.WaitFor(t, 30*time.Second, "the second sd-server to answer", func() bool {
		c, _ := get(second.port, "/v1/models")
		return c == 200
	})
	select {
	case <-second.done:
		t.Fatalf("the second sd-server exited: %v", second.cmd.ProcessState)
	default:
	}
}

// checkServerSigterm: sd-server installs no SIGTERM handler; SIGTERM kills
// it.
func checkServerSigterm(t *testing.T, tg sdTarget) {
	if tg.server == "" || tg.model == "" {
		t.Skip("SD_SERVER and SD_MODEL not set")
	}
	s := startSDServer(t, tg, freePort(t))
	waitListening(t, s)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.done
	ws, _ := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("after SIGTERM: %v; want killed by SIGTERM", s.cmd.ProcessState)
	}
}
