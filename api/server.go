package api

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// Scheduler is what the API needs of the scheduler.
type Scheduler interface {
	Admit(ctx context.Context, model string) error
	Notify(model string)
	Cancel(ctx context.Context, id string) (bool, error)
	Snapshot(ctx context.Context) (scheduler.Snapshot, error)
	JobProgress(ctx context.Context, id string) (scheduler.Progress, bool, error)
	LastBeat() time.Time
	Bus() *scheduler.Bus
}

// ModelController is the optional part of the scheduler that loads and
// unloads models on request.
type ModelController interface {
	Load(ctx context.Context, model string) error
	Unload(ctx context.Context, model string) error
}

// Store is what the API needs of the job store.
type Store interface {
	Enqueue(ctx context.Context, j *store.Job) error
	Get(id string) (store.Job, error)
	Result(id string) ([]byte, error)
	Cancel(id string) (store.JobState, error)
	Position(id string) (int, error)
	List(f store.ListFilter) ([]store.Job, error)
}

// Config holds the API's settings.
type Config struct {
	APIKeys        []string
	MaxBodyBytes   int64      // default 1 MiB
	MaxPromptChars int        // default 100000
	MaxAttempts    int        // stored on each job; default 3
	ModelTypes     ModelKinds // model name → its kind
	ImageDir       string     // diffusion images: ImageDir/JOB_ID/N.png (DATA_DIR/images)
	Version        string
	Logger         *slog.Logger
	NowFunc        func() time.Time
	// Metrics, if set, counts requests by route and status code.
	Metrics *Metrics
	// InteractivePriority is the priority of each OpenAI-route request in
	// the scheduler's queue (scheduling.interactive_priority).
	InteractivePriority int
	// Embeddings names the LLMs that serve /v1/embeddings.
	Embeddings map[string]bool
	// Aliases maps each alias to the name of its model
	// (models.*[].aliases); every door accepts both.
	Aliases map[string]string
	// ServesRoute reports whether model's engine serves the llama-server
	// route path (passthrough.go); nil: every LLM serves them all.
	ServesRoute func(model, path string) bool
	// ModelInfo describes each model's file (Ollama's /api/tags, /api/show).
	ModelInfo map[string]ModelInfo
	// Endpoints lists, per model, the OpenAI paths its engine serves: those
	// a durable endpoint/body job may name.
	Endpoints map[string][]string
	// RelayImages names the image models whose engine answers
	// /v1/images/generations itself (the command engine): that route queues
	// the request as a durable endpoint/body job and answers with the
	// engine's JSON, instead of a prompt job of stable-diffusion.cpp's.
	RelayImages map[string]bool
	// Batches, if set, serves the OpenAI Files and Batch routes.
	Batches Batches
	// BatchesOff, when Batches is nil, says why those routes are off: they
	// answer 501 with it instead of 404.
	BatchesOff string

	// ListenHost is server.host. On a loopback host only loopback Host
	// names and AllowedHosts are answered (DNS rebinding; guard.go).
	ListenHost string
	// AllowedHosts (server.allowed_hosts) are Host values answered besides
	// loopback names: "name" (any port) or "name:port". Set on any host, they
	// turn the Host check on.
	AllowedHosts []string
	// CORSOrigins (server.cors_origins) are the browser origins
	// (scheme://host[:port]) allowed to call the API from their pages.
	CORSOrigins []string
	// BodyIdleTimeout closes a request whose body sends nothing for that
	// long (server.body_idle_timeout_seconds); default 30s.
	BodyIdleTimeout time.Duration
	// MaxInflightBodyBytes bounds the body bytes held for all requests at
	// once (server.max_inflight_body_mb); default 256 MiB.
	MaxInflightBodyBytes int64
	// MaxEventClients bounds the /events subscribers
	// (server.max_event_clients); default 256.
	MaxEventClients int
	// ArgvPromptModels names the diffusion models whose prompts travel as
	// one argv element each (sd-cli): MaxArgvPromptBytes applies.
	ArgvPromptModels map[string]bool
	// Node names this node and FleetFunc describes every live node sharing
	// the queue, for /health (storage.backend redis); nil on one machine.
	Node      string
	FleetFunc func(ctx context.Context) ([]wire.Node, error)
	// RemoteFor, if set, names another live node (its base URL) that has
	// model loaded while this node has not: the interactive doors (OpenAI,
	// passthrough, Anthropic, Ollama) relay the request there (remote.go).
	// nil on one machine.
	RemoteFor func(ctx context.Context, model string) (baseURL string, ok bool)
	// Logs holds the daemon's recent log lines for GET /logs/stream (logs.go).
	Logs *LogRing
	// Started is when the daemon started (uptime in /health); zero: now.
	// A reload builds a new Server with the daemon's start time.
	Started time.Time
	// The config reload hooks (admin.go); nil: not available.
	Reload        func(ctx context.Context) (report any, err error)
	ConfigError   func() string // the last rejected reload's error, "" once one is applied
	RunningConfig func() any    // GET /admin/config
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	sched   Scheduler
	store   Store
	log     *slog.Logger
	now     func() time.Time
	started time.Time
	echo    *echo.Echo
	closing chan struct{} // closed by Close: long-lived streams end
	once    sync.Once

	engines   *http.Client // pooled connections to the engines (OpenAI routes)
	acquireFn acquireFunc  // tests' stand-in for the scheduler's Acquire
	// Comments to a streaming request waiting for a slot: first after, then every.
	waitNoteAfter, waitNoteEvery time.Duration
	oaiModels                    []openAIModel // GET /v1/models

	hosts             *hostGuard    // nil: every Host is answered
	bodies            *byteBudget   // body bytes held by requests in flight
	eventClients      atomic.Int64  // /events streams and WebSocket event subscriptions open
	jobStreams        atomic.Int64  // job streams open (SSE and WebSocket)
	eventWriteTimeout time.Duration // one event's write to a client
}

// Close ends long-lived responses (the event stream) so that the HTTP
// server's graceful shutdown does not wait for clients that never leave.
// Safe to call more than once.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closing) })
	s.engines.CloseIdleConnections()
}

// New builds the server and its routes.
func New(cfg Config, sched Scheduler, st Store) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxPromptChars <= 0 {
		cfg.MaxPromptChars = 100_000
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	setLimitDefaults(&cfg)
	s := &Server{cfg: cfg, sched: sched, store: st, log: cfg.Logger, now: cfg.NowFunc, closing: make(chan struct{}),
		waitNoteAfter: defaultWaitNoteAfter, waitNoteEvery: defaultWaitNoteEvery,
		hosts: newHostGuard(cfg.ListenHost, cfg.AllowedHosts), bodies: &byteBudget{max: cfg.MaxInflightBodyBytes},
		eventWriteTimeout: defaultEventWriteTimeout}
	s.started = s.now()
	if !cfg.Started.IsZero() {
		s.started = cfg.Started
	}
	s.engines = newEngineClient()
	s.oaiModels = s.openAIModelList()
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Pre(s.guard)
	if cfg.Metrics != nil {
		e.Use(cfg.Metrics.Middleware(e))
	}
	e.Use(s.recoverPanics, s.auth)
	e.GET("/health", s.health)
	e.GET("/models", s.models)
	e.POST("/models/:name/load", s.loadUnload(true))
	e.POST("/models/:name/unload", s.loadUnload(false))
	e.POST("/jobs", s.submit)
	e.GET("/jobs", s.listJobs)
	e.GET("/jobs/:id", s.getJob)
	e.GET("/jobs/:id/result", s.getResult)
	e.DELETE("/jobs/:id", s.cancelJob)
	e.GET("/events", s.events)
	s.routeDashboard(e) // GET / and its assets; no key needed
	e.GET("/jobs/:id/images/:n", s.getImage)
	e.POST("/v1/images/generations", s.imagesGenerations)
	e.GET("/jobs/:id/stream", s.streamJob)
	e.GET("/ws", s.ws)
	e.GET("/v1/models", s.openAIModels)
	e.GET("/v1/models/:model", s.openAIModel)
	e.POST("/v1/chat/completions", s.openAIRoute(kindChat))
	e.POST("/v1/completions", s.openAIRoute(kindCompletion))
	e.POST("/v1/embeddings", s.openAIRoute(kindEmbedding))
	s.routePassthrough(e) // llama-server's other routes (passthrough.go)
	s.routeUpstream(e)    // /upstream/{model}/… (upstream.go)
	s.routeOllama(e)      // /api/… (ollama.go)
	s.routeBatches(e)     // /v1/files, /v1/batches
	s.routeLogs(e)        // /logs/stream… (logs.go)
	s.routeAdmin(e)       // /admin/… (admin.go)
	s.echo = e
	return s
}

// Handler returns the http.Handler to serve.
// Request bodies are read under the limits of limits.go.
func (s *Server) Handler() http.Handler { return s.limitBodies(s.echo) }

// auth requires a key (Bearer, or x-api-key as Anthropic's clients send
// it) on every route but /health and the dashboard page (publicPath) when
// keys are set.
// Keys are compared in constant time.
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.cfg.APIKeys) == 0 || publicPath(c.Path()) {
			return next(c)
		}
		if !s.hasKey(c.Request()) {
			return apiErr(http.StatusUnauthorized, CodeUnauthorized, "missing or invalid API key (Authorization: Bearer KEY, or x-api-key: KEY)")
		}
		return next(c)
	}
}

// hasKey reports whether r carries one of the API keys: as a Bearer token
// (the scheme is case-insensitive, RFC 9110 §11.1) or, as Anthropic's
// clients send it, in x-api-key.
func (s *Server) hasKey(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") && s.validKey(strings.TrimSpace(token)) {
		return true
	}
	xkey := r.Header.Get("X-Api-Key")
	return xkey != "" && s.validKey(xkey)
}

func (s *Server) validKey(token string) bool {
	found := 0
	for _, k := range s.cfg.APIKeys {
		found |= subtle.ConstantTimeCompare([]byte(token), []byte(k))
	}
	return found == 1
}

// recoverPanics turns a handler panic into a 500 and a log line.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("handler panic", "path", c.Path(), "panic", r)
				err = apiErr(http.StatusInternalServerError, CodeInternal, "internal error; see the server log")
			}
		}()
		return next(c)
	}
}
