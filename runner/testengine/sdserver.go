package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runSDServer plays sd-server: load the model, then listen and serve until
// killed (it installs no signal handler).
func runSDServer(o sdOptions) int {
	if err := loadModel(o); err != nil {
		sdLog("ERROR", "main.cpp", 92, "new_sd_ctx_t failed")
		return 1
	}
	// The real order: the model is loaded, "listening on" is logged, then
	// it listens; when that fails (port taken) it returns 0 without a word.
	sdLog("INFO", "main.cpp", 148, "listening on: http://%s:%d", o.listenIP, o.listenPort)
	// cpp-httplib sets SO_REUSEPORT: a port held by a socket that set it
	// too (another sd-server, a llama-server) is shared, both listen and
	// the kernel splits the connections; only a holder without it makes
	// the bind fail.
	addr := net.JoinHostPort(o.listenIP, strconv.Itoa(o.listenPort))
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return 0
	}
	s := &sdServer{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "Stable Diffusion Server is running")
	})
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/images/generations", s.generations)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		sdLog("ERROR", "main.cpp", 160, "server: %v", err)
	}
	return 0
}

// soReusePort is Linux's SO_REUSEPORT (the syscall package lacks it).
const soReusePort = 0xf

// reusePort sets SO_REUSEPORT on a socket before it binds.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// sdServer holds the one "model context"; generations take turns on it.
type sdServer struct {
	o  sdOptions
	mu sync.Mutex
}

func (s *sdServer) models(w http.ResponseWriter, r *http.Request) {
	sdWriteJSON(w, http.StatusOK, map[string]any{
		"data": []any{map[string]any{"id": "sd-cpp-local", "object": "model", "owned_by": "local"}},
	})
}

// sdGenRequest is one parsed POST /v1/images/generations.
type sdGenRequest struct {
	prompt, negative string
	n                int
	width, height    int
	steps            int
	cfg              float64
	seed             int64
}

var extraArgsRE = regexp.MustCompile(`<sd_cpp_extra_args>(.*?)</sd_cpp_extra_args>`)

// parse reads the body like the real route: OpenAI fields, then the native
// parameters from <sd_cpp_extra_args> in the prompt; defaults from flags.
func (s *sdServer) parse(body []byte) (sdGenRequest, int, error) {
	if len(body) == 0 {
		return sdGenRequest{}, http.StatusBadRequest, errors.New("empty body")
	}
	var b struct {
		Prompt       string `json:"prompt"`
		N            int    `json:"n"`
		Size         string `json:"size"`
		OutputFormat string `json:"output_format"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return sdGenRequest{}, http.StatusInternalServerError, err
	}
	req := sdGenRequest{n: max(b.N, 1), width: s.o.width, height: s.o.height, steps: s.o.steps, cfg: s.o.cfg, seed: s.o.seed}
	if w, h, ok := strings.Cut(b.Size, "x"); ok { // std::stoi each side; the width stays set if the height fails
		if wi, err := cppInt(w, 32, "stoi"); err == nil {
			req.width = int(wi)
			if hi, err := cppInt(h, 32, "stoi"); err == nil {
				req.height = int(hi)
			}
		}
	}
	if b.Prompt == "" {
		return req, http.StatusBadRequest, errors.New("prompt required")
	}
	if f := strings.ToLower(b.OutputFormat); f != "" && f != "png" && f != "jpeg" && f != "jpg" && f != "webp" {
		return req, http.StatusBadRequest, errors.New("invalid output_format, must be one of [png, jpeg, webp]")
	}
	extra := ""
	if m := extraArgsRE.FindStringSubmatch(b.Prompt); m != nil {
		extra = m[1]
	}
	if len(extra) >= regexStackLimit {
		regexCrash(len(extra))
	}
	req.prompt = strings.TrimSpace(extraArgsRE.ReplaceAllString(b.Prompt, ""))
	if extra != "" {
		var x struct {
			NegativePrompt *string `json:"negative_prompt"`
			Seed           *int64  `json:"seed"`
			SampleParams   struct {
				SampleSteps *int `json:"sample_steps"`
				Guidance    struct {
					TxtCFG *float64 `json:"txt_cfg"`
				} `json:"guidance"`
			} `json:"sample_params"`
		}
		if err := json.Unmarshal([]byte(extra), &x); err != nil {
			return req, http.StatusBadRequest, errors.New("invalid sd_cpp_extra_args")
		}
		if x.NegativePrompt != nil {
			req.negative = *x.NegativePrompt
		}
		if x.Seed != nil {
			req.seed = *x.Seed
		}
		if p := x.SampleParams.SampleSteps; p != nil {
			req.steps = *p
		}
		if c := x.SampleParams.Guidance.TxtCFG; c != nil {
			req.cfg = *c
		}
	}
	// The real route validates "strictly": a negative CFG scale is refused,
	// the step count is clamped to [1, 100] and n to [1, 8]; a side left
	// unset (0 or less) is 512.
	if req.cfg < 0 {
		return req, http.StatusBadRequest, errors.New("invalid params")
	}
	req.steps, req.n = min(max(req.steps, 1), serverMaxSteps), min(req.n, serverMaxImages)
	if req.width <= 0 {
		req.width = 512
	}
	if req.height <= 0 {
		req.height = 512
	}
	if req.seed < 0 {
		req.seed = rand.Int64N(1 << 31)
	}
	return req, http.StatusOK, nil
}

func (s *sdServer) generations(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, status, err := s.parse(body)
	if err != nil {
		if status == http.StatusInternalServerError {
			sdWriteJSON(w, status, map[string]any{"error": "server_error", "message": err.Error()})
			return
		}
		sdWriteJSON(w, status, map[string]any{"error": err.Error()})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data := make([]any, 0, req.n)
	for i := range req.n {
		sdLog("INFO", "stable-diffusion.cpp", 3378, "generating image: %d/%d - seed %d", i+1, req.n, req.seed+int64(i))
		sample(s.o, req.steps)
		var buf bytes.Buffer
		if err := renderPNG(&buf, req.prompt, req.negative, req.seed+int64(i), i, req.width, req.height); err != nil {
			sdWriteJSON(w, http.StatusInternalServerError, map[string]any{"error": "generate_image returned no results"})
			return
		}
		data = append(data, map[string]any{"b64_json": base64.StdEncoding.EncodeToString(buf.Bytes())})
	}
	sdWriteJSON(w, http.StatusOK, map[string]any{"created": time.Now().Unix(), "data": data, "output_format": "png"})
}

// The clamps of the real route's strict validation.
const (
	serverMaxSteps  = 100
	serverMaxImages = 8
)

// regexStackLimit is about where the real sd-server's std::regex over the
// <sd_cpp_extra_args> text (routes_openai.cpp) overflows the stack of its
// request thread and the process dies of SIGSEGV.
const regexStackLimit = 50_000

// regexCrash dies as the real server does on a tag text that long.
func regexCrash(n int) {
	logf("test: %d bytes of sd_cpp_extra_args overflow std::regex's recursion: SIGSEGV", n)
	signal.Reset(syscall.SIGSEGV)
	_ = syscall.Kill(os.Getpid(), syscall.SIGSEGV)
	select {}
}

// sdWriteJSON answers as the real routes do (nlohmann's dump): compact,
// no HTML escapes, no trailing newline, Content-Type application/json.
func sdWriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
