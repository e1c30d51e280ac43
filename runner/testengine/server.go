package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server is the HTTP side: readiness gate, slots, the endpoints.
type server struct {
	o       options
	model   string // name reported in answers
	pooling string // modelPooling: none, mean, cls, last or rank
	mux     *http.ServeMux
	slots   chan int // free slot IDs; a request holds one while it generates

	ready       atomic.Bool  // model "loaded"
	hung        atomic.Bool  // --test-hang-after reached
	terminating atomic.Bool  // SIGTERM seen in --test-sigterm-waits-clients mode
	gens        atomic.Int64 // generation requests received
	inflight    sync.WaitGroup

	processing, deferred atomic.Int64 // for /metrics
	promptTokens         atomic.Int64
	predictedTokens      atomic.Int64
}

func newServer(o options) *server {
	s := &server{o: o, mux: http.NewServeMux(), slots: make(chan int, o.parallel), pooling: modelPooling(o)}
	for i := range o.parallel {
		s.slots <- i
	}
	switch {
	case o.alias != "":
		s.model = o.alias
	case o.model != "":
		s.model = o.model // llama-server reports the path as given
	default:
		s.model = "testengine"
	}
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("GET /v1/health", s.health)
	s.mux.HandleFunc("GET /models", s.models)
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("POST /completion", s.generation(kindNative))
	s.mux.HandleFunc("POST /completions", s.generation(kindNative))
	s.mux.HandleFunc("POST /v1/completions", s.generation(kindCompletion))
	s.mux.HandleFunc("POST /chat/completions", s.generation(kindChat))
	s.mux.HandleFunc("POST /v1/chat/completions", s.generation(kindChat))
	s.mux.HandleFunc("POST /embedding", s.embeddings)
	s.mux.HandleFunc("POST /embeddings", s.embeddings)
	s.mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	s.mux.HandleFunc("POST /v1/messages", s.generation(kindAnthropic))
	s.mux.HandleFunc("POST /v1/responses", s.generation(kindResponses))
	s.mux.HandleFunc("POST /responses", s.generation(kindResponses))
	s.mux.HandleFunc("POST /infill", s.generation(kindInfill))
	s.routeTools()
	return s
}

// ServeHTTP applies llama-server's gates: a hung engine answers nothing; a
// loading one answers 503 everywhere.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.hung.Load() {
		<-r.Context().Done() // never answer; return when the client gives up
		return
	}
	keepAlive(w, r)
	w = &closeOnError{ResponseWriter: w}
	if !s.ready.Load() {
		writeError(w, http.StatusServiceUnavailable, "unavailable_error", "Loading model")
		return
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	if r.URL.Path != "/health" && r.URL.Path != "/v1/health" {
		logf("srv  log_server_r: done request: %s %s %s %d", r.Method, r.URL.Path, r.RemoteAddr, rec.status)
	}
}

// closeOnError closes the connection after an error answer, as
// cpp-httplib does ("Don't leave connections open after errors").
type closeOnError struct {
	http.ResponseWriter
}

func (c *closeOnError) WriteHeader(code int) {
	if code >= 400 {
		c.Header().Del("Keep-Alive")
		c.Header().Set("Connection", "close")
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closeOnError) Unwrap() http.ResponseWriter { return c.ResponseWriter }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers in llama-server's error shape.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "message": msg, "type": typ}})
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

func (s *server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"models": []any{map[string]any{
			"name": s.model, "model": s.model, "type": "model", "capabilities": []string{"completion"},
		}},
		"object": "list",
		"data": []any{map[string]any{
			"id": s.model, "object": "model", "created": time.Now().Unix(), "owned_by": "llamacpp",
			"meta": map[string]any{"n_ctx_train": max(s.o.ctxSize, 4096), "n_vocab": 32000, "n_embd": embedDims},
		}},
	})
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	if !s.o.metrics {
		writeError(w, http.StatusNotImplemented, "not_supported_error",
			"This server does not support metrics endpoint. Start it with `--metrics`")
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range []struct {
		name, typ, help string
		v               int64
	}{
		{"prompt_tokens_total", "counter", "Number of prompt tokens processed.", s.promptTokens.Load()},
		{"tokens_predicted_total", "counter", "Number of generation tokens processed.", s.predictedTokens.Load()},
		{"requests_processing", "gauge", "Number of requests processing.", s.processing.Load()},
		{"requests_deferred", "gauge", "Number of requests deferred.", s.deferred.Load()},
	} {
		fmt.Fprintf(w, "# HELP llamacpp:%s %s\n# TYPE llamacpp:%s %s\nllamacpp:%s %d\n",
			m.name, m.help, m.name, m.typ, m.name, m.v)
	}
}

// acquireSlot waits for a free slot (requests beyond --parallel queue, as in
// llama-server) and reports false if the client went away first.
func (s *server) acquireSlot(ctx context.Context) (int, bool) {
	select {
	case id := <-s.slots:
		return id, true
	default:
	}
	s.deferred.Add(1)
	defer s.deferred.Add(-1)
	select {
	case id := <-s.slots:
		return id, true
	case <-ctx.Done():
		return 0, false
	}
}

const embedDims = 16

func (s *server) embeddings(w http.ResponseWriter, r *http.Request) {
	if !s.o.embeddings {
		writeError(w, http.StatusNotImplemented, "not_supported_error",
			"This server does not support embeddings. Start it with `--embeddings`")
		return
	}
	inputs, ok := s.embeddingInputs(w, r)
	if !ok {
		return
	}
	slot, ok := s.acquireSlot(r.Context())
	if !ok {
		return
	}
	defer func() { s.slots <- slot }()
	data := make([]any, len(inputs))
	n := 0
	for i, in := range inputs {
		data[i] = map[string]any{"embedding": embed(in), "index": i, "object": "embedding"}
		n += len(strings.Fields(in))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"model":  s.model,
		"object": "list",
		"usage":  map[string]any{"prompt_tokens": n, "total_tokens": n},
		"data":   data,
	})
}

// embed derives a unit vector from the input.
func embed(in string) []float64 {
	v := make([]float64, embedDims)
	var norm float64
	for i := range v {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d:%s", i, in)
		v[i] = float64(h.Sum64()%2001)/1000 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		norm = 1
	}
	for i := range v {
		v[i] /= norm
	}
	return v
}

// stringOrList decodes a JSON string or array of strings.
func stringOrList(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, true
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many, true
	}
	return nil, false
}

// crash simulates an engine dying mid-job.
func crash(n int64) {
	logf("test: simulated crash while serving generation request %d (--test-crash-after)", n)
	os.Exit(2)
}
