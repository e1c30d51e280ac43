package main

// Configuration: defaults, then the YAML file, then VRAMCRAM_* environment
// overrides, then validation. Every problem found on the way (unknown keys,
// wrong types, invalid values) is collected with its full key path and
// returned at once in a *ConfigError, so a user fixes a config in one round.
//
// koanf reads the file (file provider + YAML parser) and the environment
// (env provider). Decoding into Config is our own small reflection walk over
// the `koanf` struct tags rather than koanf.Unmarshal (mapstructure): we need
// per-list-element defaults, errors that name the exact key path
// (models.llm[1].config.context_size), unknown keys reported rather than
// dropped, and strict types in the file but string parsing for env values.

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/vramcram/vramcram/engine/command"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/engine/sdcpp"
)

// Config is the whole daemon configuration. LoadConfig builds it; the field
// comments give the defaults (see DefaultConfig) and config.example.yaml
// documents every key.
type Config struct {
	Server     ServerConfig     `koanf:"server"`
	Storage    StorageConfig    `koanf:"storage"`
	VRAM       VRAMConfig       `koanf:"vram"`
	Inference  InferenceConfig  `koanf:"inference"`
	Agents     AgentsConfig     `koanf:"agents"`
	Scheduling SchedulingConfig `koanf:"scheduling"`
	Logging    LoggingConfig    `koanf:"logging"`
	Models     ModelsConfig     `koanf:"models"`
}

// ServerConfig is the HTTP API listener.
type ServerConfig struct {
	Host                string   `koanf:"host"`                  // default 127.0.0.1
	Port                int      `koanf:"port"`                  // default 8000
	MetricsPort         int      `koanf:"metrics_port"`          // default 9090; 0 disables
	APIKeys             []string `koanf:"api_keys"`              // default none
	AllowInsecureRemote bool     `koanf:"allow_insecure_remote"` // must be true to listen on a non-loopback host without api_keys
	MaxBodyBytes        int64    `koanf:"max_body_bytes"`        // default 1 MiB
	MaxPromptChars      int      `koanf:"max_prompt_chars"`      // default 100000
	// Browser guards: origins whose pages may call the API (CORS, and
	// state-changing requests), and Host values answered besides loopback
	// names.
	CORSOrigins  []string `koanf:"cors_origins"`  // default none
	AllowedHosts []string `koanf:"allowed_hosts"` // default none
	// Connection and body limits.
	BodyIdleTimeoutSeconds int `koanf:"body_idle_timeout_seconds"` // default 30
	MaxConnections         int `koanf:"max_connections"`           // default 1024
	MaxInflightBodyMB      int `koanf:"max_inflight_body_mb"`      // default 256
	MaxEventClients        int `koanf:"max_event_clients"`         // default 256
}

// StorageConfig is where the bbolt file, results and pid records live.
type StorageConfig struct {
	DataDir        string `koanf:"data_dir"`        // default ./data
	RetentionHours int    `koanf:"retention_hours"` // default 168; 0 keeps forever
	MaxFileMB      int    `koanf:"max_file_mb"`     // default 200: largest /v1/files upload
	// Backend holds the queue: bbolt (one machine, the default) or redis
	// (a fleet sharing one queue; docs/fleet.md).
	Backend string      `koanf:"backend"`
	Redis   RedisConfig `koanf:"redis"`
}

// RedisConfig is the shared queue of a fleet (storage.backend: redis).
type RedisConfig struct {
	URL          string `koanf:"url"`           // redis://host:port/db
	LeaseSeconds int    `koanf:"lease_seconds"` // a dead node's jobs requeue after this; default 30
	Node         string `koanf:"node"`          // this node's name in the fleet; default the host name
	Prefix       string `koanf:"prefix"`        // key prefix; default "vramcram:"
}

// VRAMConfig is the VRAM ledger's budget and the NVML polling period.
type VRAMConfig struct {
	TotalMB                   int `koanf:"total_mb"`                    // default 24576
	SafetyMarginMB            int `koanf:"safety_margin_mb"`            // default 1024
	MonitoringIntervalSeconds int `koanf:"monitoring_interval_seconds"` // default 5
	ReleaseTimeoutSeconds     int `koanf:"release_timeout_seconds"`     // default 10: wait for an evicted engine's memory to show free
	// Devices restricts the GPUs used (NVML: by uuid, else index) or, without
	// NVML, describes them (total_mb each). Empty: every GPU NVML lists, or
	// one of total_mb.
	Devices []DeviceConfig `koanf:"devices"`
}

// DeviceConfig is one entry of vram.devices.
type DeviceConfig struct {
	Index   int    `koanf:"index"`
	UUID    string `koanf:"uuid"`
	TotalMB int    `koanf:"total_mb"` // the size when NVML is absent
}

// InferenceConfig holds the engine binaries' paths (looked up in PATH when
// they contain no slash).
type InferenceConfig struct {
	LlamaServerPath string `koanf:"llama_server_path"` // default llama-server
	SDPath          string `koanf:"sd_path"`           // default sd-cli
	SDServerPath    string `koanf:"sd_server_path"`    // default sd-server
}

// AgentsConfig times the engine children: heartbeats, readiness, shutdown.
type AgentsConfig struct {
	HeartbeatIntervalSeconds       int `koanf:"heartbeat_interval_seconds"`        // 10
	HeartbeatTimeoutSeconds        int `koanf:"heartbeat_timeout_seconds"`         // 30
	WorkerReadyTimeoutSeconds      int `koanf:"worker_ready_timeout_seconds"`      // 60
	GracefulShutdownTimeoutSeconds int `koanf:"graceful_shutdown_timeout_seconds"` // 300
	StopGraceSeconds               int `koanf:"stop_grace_seconds"`                // 10: SIGTERM → SIGKILL grace for one engine
}

// SchedulingConfig chooses the dispatch policy and the queue's limits.
type SchedulingConfig struct {
	Policy         string `koanf:"policy"`           // batch (default) | fifo
	MaxWaitSeconds int    `koanf:"max_wait_seconds"` // 30
	MaxQueue       int    `koanf:"max_queue"`        // 10000
	MaxAttempts    int    `koanf:"max_attempts"`     // 3
	AgingSeconds   int    `koanf:"aging_seconds"`    // 60: +1 priority per 60 s waited; 0 off
	// InteractivePriority is the queue priority of each request to the
	// OpenAI-compatible routes (-100..100, higher first); default 10.
	InteractivePriority int `koanf:"interactive_priority"`
	// BatchPriority is the queue priority of each line of an OpenAI batch;
	// default -10, so interactive requests and ordinary jobs go first.
	BatchPriority int `koanf:"batch_priority"`
}

// LoggingConfig configures slog.
type LoggingConfig struct {
	Level  string `koanf:"level"`  // debug|info|warn|error, default info
	Format string `koanf:"format"` // auto (tint on a terminal, JSON otherwise) | text | json; default auto
}

// ModelsConfig lists the models that may be served. Names are unique across
// both lists.
type ModelsConfig struct {
	LLM       []LLMModel       `koanf:"llm"`
	Diffusion []DiffusionModel `koanf:"diffusion"`
}

// LLMModel is one model served by llama-server.
type LLMModel struct {
	Name       string          `koanf:"name"`
	Aliases    []string        `koanf:"aliases"` // other names clients may use; unique across names and aliases
	ModelPath  string          `koanf:"model_path"`
	VRAMMB     int             `koanf:"vram_mb"` // 0: unknown, estimate it
	Pinned     bool            `koanf:"pinned"`
	Preload    bool            `koanf:"preload"`
	TTLSeconds int             `koanf:"ttl_seconds"` // 0: no idle unload
	GPUs       []int           `koanf:"gpus"`        // devices to use; several split the model; empty: VramCram picks one
	Config     LLMEngineConfig `koanf:"config"`
}

// LLMEngineConfig is passed to llama-server as flags, or picks the command
// engine.
type LLMEngineConfig struct {
	ContextSize int               `koanf:"context_size"` // default 4096
	GPULayers   int               `koanf:"gpu_layers"`   // default 99
	Parallel    int               `koanf:"parallel"`     // default 1
	Embeddings  bool              `koanf:"embeddings"`
	ExtraArgs   []string          `koanf:"extra_args"`
	Engine      string            `koanf:"engine"`      // llama-server (default) | command
	Binary      string            `koanf:"binary"`      // llama-server: overrides inference.llama_server_path
	Cmd         []string          `koanf:"cmd"`         // command: argv template with ${PORT} ${HOST} ${MODEL_PATH} ${MODEL_NAME} ${GPUS} ${CONTEXT_SIZE}
	Env         map[string]string `koanf:"env"`         // command: added to the engine's environment (values take the macros too)
	HealthPath  string            `koanf:"health_path"` // command: ready when it answers 200; default /health
	Routes      []string          `koanf:"routes"`      // command: OpenAI paths it serves
	// Pooling is llama-server's --pooling, passed with --embeddings: none,
	// mean, cls, last or rank. Default: the GGUF's own pooling type, else
	// mean (a GGUF without one would refuse OpenAI embeddings).
	Pooling string `koanf:"pooling"`
}

// DiffusionModel is one model served by sd-cli or sd-server.
type DiffusionModel struct {
	Name       string                `koanf:"name"`
	Aliases    []string              `koanf:"aliases"` // other names clients may use; unique across names and aliases
	ModelPath  string                `koanf:"model_path"`
	VRAMMB     int                   `koanf:"vram_mb"` // 0: unknown, estimate it
	Pinned     bool                  `koanf:"pinned"`
	Preload    bool                  `koanf:"preload"`
	TTLSeconds int                   `koanf:"ttl_seconds"` // 0: no idle unload
	GPUs       []int                 `koanf:"gpus"`        // devices to use; empty: VramCram picks one
	Config     DiffusionEngineConfig `koanf:"config"`
}

// DiffusionEngineConfig picks the engine and the per-job defaults.
type DiffusionEngineConfig struct {
	Engine         string            `koanf:"engine"`          // sd-cli (default) | sd-server | command
	Width          int               `koanf:"width"`           // 512
	Height         int               `koanf:"height"`          // 512
	Steps          int               `koanf:"steps"`           // 20
	CFGScale       float64           `koanf:"cfg_scale"`       // 7.0
	SamplingMethod string            `koanf:"sampling_method"` // optional
	ExtraArgs      []string          `koanf:"extra_args"`
	Scheduler      string            `koanf:"scheduler"`       // optional: --scheduler
	DiffusionModel string            `koanf:"diffusion_model"` // optional: --diffusion-model (then model_path may be empty)
	VAE            string            `koanf:"vae"`             // optional: --vae
	ClipL          string            `koanf:"clip_l"`          // optional: --clip_l
	ClipG          string            `koanf:"clip_g"`          // optional: --clip_g
	T5XXL          string            `koanf:"t5xxl"`           // optional: --t5xxl
	LLM            string            `koanf:"llm"`             // optional: --llm (LLM text encoder)
	TimeoutSeconds int               `koanf:"timeout_seconds"` // 600: a job's limit; 0 = none
	Cmd            []string          `koanf:"cmd"`             // command: argv template with ${PORT} ${HOST} ${MODEL_PATH} ${MODEL_NAME} ${GPUS} ${CONTEXT_SIZE}
	Env            map[string]string `koanf:"env"`             // command: added to the engine's environment (values take the macros too)
	HealthPath     string            `koanf:"health_path"`     // command: ready when it answers 200; default /health
	Routes         []string          `koanf:"routes"`          // command: OpenAI paths it serves
}

// envPrefix marks the environment variables that override config keys:
// VRAMCRAM_SERVER__PORT=9000 sets server.port.
const envPrefix = "VRAMCRAM_"

// envNotKeys are VRAMCRAM_ variables that are not config keys and so are
// neither applied nor reported as unknown. VRAMCRAM_CONFIG names the file.
var envNotKeys = map[string]bool{
	"VRAMCRAM_CONFIG": true,
	envURL:            true, // client commands: the server's address
	envAPIKey:         true, // client commands: the Bearer key
}

// DefaultConfig returns the configuration used where neither the file nor the
// environment sets a key. Models get their per-model defaults when they are
// decoded (see LLMModel.setDefaults and DiffusionModel.setDefaults).
func DefaultConfig() Config {
	return Config{
		Server: ServerConfig{
			Host:           "127.0.0.1",
			Port:           8000,
			MetricsPort:    9090,
			MaxBodyBytes:   1 << 20,
			MaxPromptChars: 100000,

			BodyIdleTimeoutSeconds: 30,
			MaxConnections:         1024,
			MaxInflightBodyMB:      256,
			MaxEventClients:        256,
		},
		Storage: StorageConfig{
			DataDir:        "./data",
			RetentionHours: 168,
			MaxFileMB:      200,
			Backend:        "bbolt",
			Redis:          RedisConfig{URL: "redis://127.0.0.1:6379/0", LeaseSeconds: 30},
		},
		VRAM: VRAMConfig{
			TotalMB:                   24576,
			SafetyMarginMB:            1024,
			MonitoringIntervalSeconds: 5,
			ReleaseTimeoutSeconds:     10,
		},
		Inference: InferenceConfig{
			LlamaServerPath: "llama-server",
			SDPath:          "sd-cli",
			SDServerPath:    "sd-server",
		},
		Agents: AgentsConfig{
			HeartbeatIntervalSeconds:       10,
			HeartbeatTimeoutSeconds:        30,
			WorkerReadyTimeoutSeconds:      60,
			GracefulShutdownTimeoutSeconds: 300,
			StopGraceSeconds:               10,
		},
		Scheduling: SchedulingConfig{
			Policy:         "batch",
			MaxWaitSeconds: 30,
			AgingSeconds:   60,
			MaxQueue:       10000,
			MaxAttempts:    3,

			InteractivePriority: 10,
			BatchPriority:       -10,
		},
		Logging: LoggingConfig{
			Level:  "info",
			Format: "auto",
		},
	}
}

// setDefaults fills the per-model defaults before a list element is decoded.
func (m *LLMModel) setDefaults() {
	m.Config = LLMEngineConfig{ContextSize: 4096, GPULayers: 99, Parallel: 1, Engine: llamacpp.Name}
}

// setDefaults fills the per-model defaults before a list element is decoded.
func (m *DiffusionModel) setDefaults() {
	m.Config = DiffusionEngineConfig{Engine: "sd-cli", Width: 512, Height: 512, Steps: 20, CFGScale: 7, TimeoutSeconds: 600}
}

// ConfigError lists every problem found while loading a configuration.
// Problems start with the key path they concern, e.g.
// "server.port: expected integer, got \"abc\"".
type ConfigError struct {
	Path     string // the config file; "" when none was read
	Problems []string
}

// Error returns the problems one per line, each prefixed with the file path.
func (e *ConfigError) Error() string {
	prefix := e.Path
	if prefix == "" {
		prefix = "config"
	}
	if len(e.Problems) == 0 {
		return prefix + ": invalid configuration"
	}
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(prefix)
		b.WriteString(": ")
		b.WriteString(p)
	}
	return b.String()
}

// LoadConfig builds the configuration from DefaultConfig, then the YAML file
// at path (none when path is ""), then the VRAMCRAM_* entries of environ
// ("NAME=value" strings as from os.Environ; nil means none), and validates
// the result.
//
// In environ, VRAMCRAM_SERVER__PORT=9000 sets server.port: the prefix is
// dropped, the rest lower-cased, and "__" separates levels. List elements are
// addressed by index (VRAMCRAM_MODELS__LLM__0__VRAM_MB=7000 changes the
// first LLM of the file). String lists take a comma-separated value
// (VRAMCRAM_SERVER__API_KEYS=k1,k2; spaces around items are trimmed, empty
// items dropped). VRAMCRAM_CONFIG is not a key and is skipped.
//
// A null value in the file keeps the default. Keys match exactly (lower case).
//
// Returns an error wrapping the *fs.PathError if the file cannot be read, and
// a *ConfigError listing every problem (bad YAML, unknown keys, wrong types,
// invalid values) otherwise.
func LoadConfig(path string, environ []string) (*Config, error) {
	cfg := DefaultConfig()
	root := reflect.ValueOf(&cfg).Elem()
	d := &decoder{}

	parsed := true
	if path != "" {
		raw, err := loadFile(path)
		var pathErr *fs.PathError
		switch {
		case errors.As(err, &pathErr):
			return nil, fmt.Errorf("read config: %w", err)
		case err != nil:
			d.problems = append(d.problems, "invalid YAML: "+err.Error())
			parsed = false
		default:
			d.decode("", raw, root)
		}
	}

	vars, err := env.Provider("", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(k, v string) (string, any) {
			if envNotKeys[k] {
				return "", nil
			}
			return k, v
		},
	}).Read()
	if err != nil { // the env provider never fails today
		return nil, fmt.Errorf("read environment: %w", err)
	}
	names := make([]string, 0, len(vars))
	for name := range vars {
		names = append(names, name)
	}
	slices.Sort(names)
	d.env = true
	for _, name := range names {
		value, _ := vars[name].(string)
		d.envVar = name
		d.setEnv(root, strings.Split(strings.ToLower(strings.TrimPrefix(name, envPrefix)), "__"), value)
	}

	// Validation of a config whose file could not be parsed would only list
	// the defaults' consequences; skip it.
	if parsed {
		d.problems = append(d.problems, d.unrelated(cfg.Validate())...)
	}
	if len(d.problems) > 0 {
		return nil, &ConfigError{Path: path, Problems: d.problems}
	}
	return &cfg, nil
}

// loadFile reads and parses the YAML file through koanf. A read failure comes
// back as the *fs.PathError; anything else is a parse error.
func loadFile(path string) (raw map[string]any, err error) {
	// The YAML parser is third-party code fed with user bytes; a panic in it
	// must become a config problem, not a crash at start-up.
	defer func() {
		if r := recover(); r != nil {
			raw, err = nil, fmt.Errorf("yaml parser panic: %v", r)
		}
	}()
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, err
	}
	return k.Raw(), nil
}

// decoder copies loosely typed values (from YAML or the environment) into
// the Config struct by its koanf tags and records every problem.
type decoder struct {
	problems []string
	failed   []string // key paths with a decoding problem
	env      bool     // values are environment strings: parse numbers and booleans
	envVar   string   // the variable being applied, named in problems
}

func (d *decoder) addf(path, format string, args ...any) {
	d.failed = append(d.failed, path)
	msg := formatPath(path) + ": " + fmt.Sprintf(format, args...)
	if d.env {
		msg += " (from " + d.envVar + ")"
	}
	d.problems = append(d.problems, msg)
}

// unrelated drops the validation problems about keys that could not be
// decoded: "models.llm[0]: expected mapping" needs no
// "models.llm[0].name: required" after it.
func (d *decoder) unrelated(problems []string) []string {
	var out []string
	for _, p := range problems {
		key, _, _ := strings.Cut(p, ": ")
		if !slices.ContainsFunc(d.failed, func(f string) bool {
			return key == f || strings.HasPrefix(key, f+".") || strings.HasPrefix(key, f+"[")
		}) {
			out = append(out, p)
		}
	}
	return out
}

// setEnv applies one environment variable: segs is the key path.
func (d *decoder) setEnv(v reflect.Value, segs []string, value string) {
	path := ""
	for _, seg := range segs {
		switch v.Kind() {
		case reflect.Struct:
			i, ok := fieldIndex(v.Type(), seg)
			if !ok {
				d.unknownKey(v.Type(), joinKey(path, seg), seg)
				return
			}
			v, path = v.Field(i), joinKey(path, seg)
		case reflect.Slice:
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 {
				d.addf(joinKey(path, seg), "unknown key (list elements are addressed by index: %s%s__0__...)", envPrefix, strings.ToUpper(strings.ReplaceAll(path, ".", "__")))
				return
			}
			if n >= v.Len() {
				d.addf(joinIndex(path, n), "no such list element (the list has %d)", v.Len())
				return
			}
			v, path = v.Index(n), joinIndex(path, n)
		default:
			d.addf(joinKey(path, seg), "unknown key")
			return
		}
	}
	d.decode(path, value, v)
}

// decode stores in at out. A nil in (YAML null) keeps out as it is.
func (d *decoder) decode(path string, in any, out reflect.Value) {
	if in == nil {
		return
	}
	switch out.Kind() {
	case reflect.Struct:
		d.decodeStruct(path, in, out)
	case reflect.Slice:
		d.decodeSlice(path, in, out)
	case reflect.Map:
		d.decodeStringMap(path, in, out)
	case reflect.String:
		s, ok := in.(string)
		if !ok {
			d.addf(path, "expected string, got %s", describe(in, false)+quoteHint(in))
			return
		}
		out.SetString(s)
	case reflect.Bool:
		b, ok := in.(bool)
		if s, isStr := in.(string); isStr && d.env {
			var err error
			b, err = strconv.ParseBool(strings.TrimSpace(s))
			ok = err == nil
		}
		if !ok {
			d.addf(path, "expected boolean, got %s", describe(in, true))
			return
		}
		out.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := d.toInt(in)
		if !ok {
			d.addf(path, "expected integer, got %s", describe(in, true))
			return
		}
		if out.OverflowInt(n) {
			d.addf(path, "integer %d out of range", n)
			return
		}
		out.SetInt(n)
	case reflect.Float64:
		f, ok := d.toFloat(in)
		if !ok {
			d.addf(path, "expected number, got %s", describe(in, true))
			return
		}
		out.SetFloat(f)
	default:
		// Only reachable if a field of an unsupported kind is added to Config.
		panic(fmt.Sprintf("config: field %s has unsupported kind %s", path, out.Kind()))
	}
}

func (d *decoder) decodeStruct(path string, in any, out reflect.Value) {
	m, ok := asMap(in)
	if !ok {
		d.addf(path, "expected mapping, got %s", describe(in, false))
		return
	}
	// Known keys in struct order, so problems follow the documented layout,
	// then the unknown ones, sorted.
	t := out.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("koanf")
		if v, ok := m[key]; ok {
			d.decode(joinKey(path, key), v, out.Field(i))
		}
	}
	var unknown []string
	for k := range m {
		if _, ok := fieldIndex(t, k); !ok {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		d.unknownKey(t, joinKey(path, k), k)
	}
}

// defaulter is implemented by list elements with per-element defaults.
type defaulter interface{ setDefaults() }

func (d *decoder) decodeSlice(path string, in any, out reflect.Value) {
	list, ok := in.([]any)
	if !ok {
		if s, isStr := in.(string); isStr && d.env && out.Type().Elem().Kind() == reflect.String {
			list = nil
			for item := range strings.SplitSeq(s, ",") {
				if item = strings.TrimSpace(item); item != "" {
					list = append(list, item)
				}
			}
		} else {
			what := "list"
			if out.Type().Elem().Kind() == reflect.Struct {
				what = "list of mappings"
			}
			d.addf(path, "expected %s, got %s", what, describe(in, false))
			return
		}
	}
	s := reflect.MakeSlice(out.Type(), len(list), len(list))
	for i, item := range list {
		elem := s.Index(i)
		if df, ok := elem.Addr().Interface().(defaulter); ok {
			df.setDefaults()
		}
		if item == nil {
			d.addf(joinIndex(path, i), "empty list element")
			continue
		}
		d.decode(joinIndex(path, i), item, elem)
	}
	out.Set(s)
}

// decodeStringMap decodes a mapping of strings (config.env).
func (d *decoder) decodeStringMap(path string, in any, out reflect.Value) {
	m, ok := asMap(in)
	if !ok {
		d.addf(path, "expected mapping, got %s", describe(in, false))
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	res := reflect.MakeMapWithSize(out.Type(), len(m))
	for _, k := range keys {
		v, ok := m[k].(string)
		if !ok {
			d.addf(joinKey(path, k), "expected string, got %s", describe(m[k], false)+quoteHint(m[k]))
			continue
		}
		res.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(v))
	}
	out.Set(res)
}

func (d *decoder) unknownKey(t reflect.Type, path, key string) {
	if near := nearestKey(t, key); near != "" {
		d.addf(path, "unknown key (did you mean %s?)", near)
		return
	}
	d.addf(path, "unknown key")
}

func (d *decoder) toInt(in any) (int64, bool) {
	switch v := in.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case uint64:
		return int64(v), v <= math.MaxInt64
	case float64: // 1e3 in YAML; only whole numbers
		if v == math.Trunc(v) && v >= math.MinInt64 && v < math.MaxInt64 {
			return int64(v), true
		}
	case string:
		if d.env {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func (d *decoder) toFloat(in any) (float64, bool) {
	switch v := in.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, true
	case string:
		if d.env {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// asMap accepts the map shapes a YAML parser produces.
func asMap(in any) (map[string]any, bool) {
	switch m := in.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

// describe names what a value is for a type error. Only where a number or a
// boolean was expected is a string shown, since string values may be secrets
// (api_keys) and the type is what matters there.
func describe(in any, showValue bool) string {
	switch v := in.(type) {
	case string:
		if showValue {
			if utf8.RuneCountInString(v) > 40 {
				v = string([]rune(v)[:40]) + "…"
			}
			return strconv.Quote(v)
		}
		return "string"
	case bool:
		if showValue {
			return strconv.FormatBool(v)
		}
		return "boolean"
	case int, int64, uint64, float64:
		if showValue {
			return fmt.Sprint(v)
		}
		return "number"
	case []any:
		return "list"
	case map[string]any, map[any]any:
		return "mapping"
	case time.Time:
		return "timestamp"
	}
	return fmt.Sprintf("%T", in)
}

func quoteHint(in any) string {
	switch in.(type) {
	case bool, int, int64, uint64, float64, time.Time:
		return " (quote the value to make it a string)"
	}
	return ""
}

// fieldIndex finds the struct field whose koanf tag is key.
func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("koanf") == key {
			return i, true
		}
	}
	return 0, false
}

// nearestKey suggests the known key closest to a misspelt one, or "".
func nearestKey(t reflect.Type, key string) string {
	best, bestDist := "", 3 // suggest only within two edits
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("koanf")
		if dist := editDistance(key, tag); dist < bestDist {
			best, bestDist = tag, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance between two short keys.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// joinKey appends a map key to a key path, quoting keys that would make the
// path ambiguous (a key containing a dot, a space, or empty).
func joinKey(path, key string) string {
	if !plainKey.MatchString(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func formatPath(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// modelName is what a model's name must look like: it appears in URLs, job
// records and log lines.
var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate returns every problem with the values of c, each prefixed with its
// key path; nil when c is valid. It does not look at the file system: a
// missing model file or engine binary makes that model unavailable at run
// time, it is not a configuration error.
func (c *Config) Validate() []string {
	var p problems

	s := c.Server
	if s.Host == "" {
		p.addf("server.host: must not be empty (127.0.0.1 serves this machine only, 0.0.0.0 every interface)")
	}
	p.port("server.port", s.Port, false)
	p.port("server.metrics_port", s.MetricsPort, true)
	if s.MetricsPort != 0 && s.Port == s.MetricsPort {
		p.addf("server.metrics_port: %d is also server.port; give them different ports (or 0 to disable metrics)", s.MetricsPort)
	}
	for i, k := range s.APIKeys {
		if strings.TrimSpace(k) == "" {
			p.addf("server.api_keys[%d]: must not be empty", i)
		}
	}
	if s.Host != "" && !isLoopbackHost(s.Host) && len(s.APIKeys) == 0 && !s.AllowInsecureRemote {
		p.addf("server.host: %q is reachable from other machines but server.api_keys is empty; "+
			"set server.api_keys to require a bearer key, or set server.allow_insecure_remote: true to serve without authentication", s.Host)
	}
	if s.MaxBodyBytes < 1 {
		p.addf("server.max_body_bytes: must be at least 1, got %d", s.MaxBodyBytes)
	}
	if s.MaxPromptChars < 1 {
		p.addf("server.max_prompt_chars: must be at least 1, got %d", s.MaxPromptChars)
	}
	validateGuards(&p, s)

	if c.Storage.DataDir == "" {
		p.addf("storage.data_dir: must not be empty")
	}
	if c.Storage.RetentionHours < 0 {
		p.addf("storage.retention_hours: must be 0 (keep forever) or more, got %d", c.Storage.RetentionHours)
	}
	p.between("storage.max_file_mb", c.Storage.MaxFileMB, 1, 1<<20)
	validateBackend(c.Storage, &p)

	v := c.VRAM
	if v.TotalMB <= 0 {
		p.addf("vram.total_mb: must be more than 0, got %d", v.TotalMB)
	}
	if v.SafetyMarginMB < 0 {
		p.addf("vram.safety_margin_mb: must be 0 or more, got %d", v.SafetyMarginMB)
	} else if v.TotalMB > 0 && v.SafetyMarginMB >= v.TotalMB {
		p.addf("vram.safety_margin_mb: %d leaves no budget; it must be less than vram.total_mb (%d)", v.SafetyMarginMB, v.TotalMB)
	}
	p.atLeast("vram.monitoring_interval_seconds", v.MonitoringIntervalSeconds, 1)
	p.atLeast("vram.release_timeout_seconds", v.ReleaseTimeoutSeconds, 1)
	seenDev := map[string]bool{}
	for i, d := range v.Devices {
		path := joinIndex("vram.devices", i)
		p.atLeast(path+".index", d.Index, 0)
		p.atLeast(path+".total_mb", d.TotalMB, 0)
		if d.TotalMB > 0 && v.SafetyMarginMB >= d.TotalMB {
			p.addf("%s.total_mb: %d leaves no budget beside vram.safety_margin_mb (%d)", path, d.TotalMB, v.SafetyMarginMB)
		}
		key := d.UUID
		if key == "" {
			key = strconv.Itoa(d.Index)
		}
		if seenDev[key] {
			p.addf("%s: GPU %s is listed twice", path, key)
		}
		seenDev[key] = true
	}

	in := c.Inference
	for _, f := range []struct{ key, val string }{
		{"inference.llama_server_path", in.LlamaServerPath},
		{"inference.sd_path", in.SDPath},
		{"inference.sd_server_path", in.SDServerPath},
	} {
		if f.val == "" {
			p.addf("%s: must not be empty", f.key)
		}
	}

	a := c.Agents
	p.atLeast("agents.heartbeat_interval_seconds", a.HeartbeatIntervalSeconds, 1)
	p.atLeast("agents.heartbeat_timeout_seconds", a.HeartbeatTimeoutSeconds, 1)
	p.atLeast("agents.worker_ready_timeout_seconds", a.WorkerReadyTimeoutSeconds, 1)
	p.atLeast("agents.graceful_shutdown_timeout_seconds", a.GracefulShutdownTimeoutSeconds, 1)
	p.atLeast("agents.stop_grace_seconds", a.StopGraceSeconds, 1)
	if a.HeartbeatIntervalSeconds >= 1 && a.HeartbeatTimeoutSeconds >= 1 && a.HeartbeatTimeoutSeconds < a.HeartbeatIntervalSeconds {
		p.addf("agents.heartbeat_timeout_seconds: %d is shorter than agents.heartbeat_interval_seconds (%d)", a.HeartbeatTimeoutSeconds, a.HeartbeatIntervalSeconds)
	}

	sc := c.Scheduling
	p.oneOf("scheduling.policy", sc.Policy, "batch", "fifo")
	p.atLeast("scheduling.max_wait_seconds", sc.MaxWaitSeconds, 0)
	p.atLeast("scheduling.aging_seconds", sc.AgingSeconds, 0)
	p.atLeast("scheduling.max_queue", sc.MaxQueue, 1)
	p.between("scheduling.max_attempts", sc.MaxAttempts, 1, 100)
	p.between("scheduling.interactive_priority", sc.InteractivePriority, -100, 100)
	p.between("scheduling.batch_priority", sc.BatchPriority, -100, 100)

	p.oneOf("logging.level", c.Logging.Level, "debug", "info", "warn", "error")
	p.oneOf("logging.format", c.Logging.Format, "auto", "text", "json")

	seen := make(map[string]string) // model name → key path of its first use
	name := func(path, n string) {
		switch {
		case n == "":
			p.addf("%s.name: required", path)
		case !modelName.MatchString(n):
			p.addf("%s.name: %q is not a valid name (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)", path, n)
		case seen[n] != "":
			p.addf("%s.name: %q is already used by %s", path, n, seen[n])
		default:
			seen[n] = path
		}
	}
	common := func(path, modelPath string, vramMB, ttl int, gpus []int) {
		if modelPath == "" {
			p.addf("%s.model_path: required", path)
		}
		seen := map[int]bool{}
		for k, g := range gpus {
			switch {
			case g < 0:
				p.addf("%s.gpus[%d]: must be 0 or more, got %d", path, k, g)
			case len(v.Devices) > 0 && g >= len(v.Devices):
				p.addf("%s.gpus[%d]: %d is not one of the %d entries of vram.devices", path, k, g, len(v.Devices))
			case seen[g]:
				p.addf("%s.gpus[%d]: GPU %d is listed twice", path, k, g)
			}
			seen[g] = true
		}
		p.atLeast(path+".vram_mb", vramMB, 0)
		p.atLeast(path+".ttl_seconds", ttl, 0)
	}
	for i, m := range c.Models.LLM {
		path := joinIndex("models.llm", i)
		name(path, m.Name)
		e := m.Config
		isCmd := e.Engine == command.Name
		modelPath := m.ModelPath
		if isCmd && modelPath == "" {
			modelPath = "-" // a command engine may name its model otherwise (vLLM)
		}
		common(path, modelPath, m.VRAMMB, m.TTLSeconds, m.GPUs)
		p.atLeast(path+".config.context_size", e.ContextSize, 1)
		p.atLeast(path+".config.gpu_layers", e.GPULayers, -1)
		p.between(path+".config.parallel", e.Parallel, 1, 64)
		p.oneOf(path+".config.engine", e.Engine, llamacpp.Name, command.Name)
		if isCmd && e.Binary != "" {
			p.addf("%s.config.binary: only for engine %s; a command model names its program in config.cmd[0]", path, llamacpp.Name)
		}
		p.commandKeys(path, isCmd, e.Cmd, e.Env, e.HealthPath, e.Routes)
		if e.Pooling != "" {
			p.oneOf(path+".config.pooling", e.Pooling, "none", "mean", "cls", "last", "rank")
			if !e.Embeddings || isCmd {
				p.addf("%s.config.pooling: only with embeddings: true (engine %s)", path, llamacpp.Name)
			}
		}
	}
	for i, m := range c.Models.Diffusion {
		path := joinIndex("models.diffusion", i)
		name(path, m.Name)
		modelPath := m.ModelPath + m.Config.DiffusionModel // a split model needs no full checkpoint
		isCmd := m.Config.Engine == command.Name
		if isCmd && modelPath == "" {
			modelPath = "-" // a command engine may name its model otherwise
		}
		if modelPath == "" {
			p.addf("%s.model_path: required (or config.diffusion_model for a model in parts)", path)
			modelPath = "-" // reported just now
		}
		common(path, modelPath, m.VRAMMB, m.TTLSeconds, m.GPUs)
		e := m.Config
		p.oneOf(path+".config.engine", e.Engine, "sd-cli", "sd-server", command.Name)
		p.commandKeys(path, isCmd, e.Cmd, e.Env, e.HealthPath, e.Routes)
		p.imageSide(path+".config.width", e.Width)
		p.imageSide(path+".config.height", e.Height)
		p.between(path+".config.steps", e.Steps, 1, 150)
		if !(e.CFGScale >= 0 && e.CFGScale <= 30) { // written so that NaN fails
			p.addf("%s.config.cfg_scale: must be between 0 and 30, got %v", path, e.CFGScale)
		}
		p.samplerName(path+".config.sampling_method", e.SamplingMethod, sdcpp.KnownSampleMethod, sdcpp.SampleMethods)
		p.samplerName(path+".config.scheduler", e.Scheduler, sdcpp.KnownScheduler, sdcpp.Schedulers)
		p.atLeast(path+".config.timeout_seconds", e.TimeoutSeconds, 0)
	}
	validateAliases(&p, c, seen)
	return p
}

// problems collects Validate's findings.
type problems []string

func (p *problems) addf(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

func (p *problems) atLeast(key string, v, lo int) {
	if v < lo {
		p.addf("%s: must be at least %d, got %d", key, lo, v)
	}
}

func (p *problems) between(key string, v, lo, hi int) {
	if v < lo || v > hi {
		p.addf("%s: must be between %d and %d, got %d", key, lo, hi, v)
	}
}

func (p *problems) port(key string, v int, zeroDisables bool) {
	lo := 1
	if zeroDisables {
		lo = 0
	}
	if v < lo || v > 65535 {
		if zeroDisables {
			p.addf("%s: must be a port between 1 and 65535, or 0 to disable, got %d", key, v)
			return
		}
		p.addf("%s: must be a port between 1 and 65535, got %d", key, v)
	}
}

func (p *problems) imageSide(key string, v int) {
	if v < 64 || v > 4096 || v%8 != 0 {
		p.addf("%s: must be a multiple of 8 between 64 and 4096, got %d", key, v)
	}
}

// samplerName checks a sampler or scheduler name against
// stable-diffusion.cpp's lists (sd-server ignores an unknown name without a
// word; sd-cli exits 1).
func (p *problems) samplerName(key, v string, known func(string) bool, names []string) {
	if v != "" && !known(v) {
		p.addf("%s: unknown name %.40q; one of %s", key, v, strings.Join(names, ", "))
	}
}

// envName is what a key of config.env must look like.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// commandKeys checks the keys of the command engine under path.config:
// cmd (required, known macros, ${PORT} used in cmd or env), env,
// health_path and routes; with another engine none may be set.
func (p *problems) commandKeys(path string, isCmd bool, cmd []string, env map[string]string, health string, routes []string) {
	key := path + ".config."
	if !isCmd {
		for _, f := range []struct {
			name string
			set  bool
		}{{"cmd", len(cmd) > 0}, {"env", len(env) > 0}, {"health_path", health != ""}, {"routes", len(routes) > 0}} {
			if f.set {
				p.addf("%s%s: only with config.engine: %s", key, f.name, command.Name)
			}
		}
		return
	}
	if len(cmd) == 0 || strings.TrimSpace(cmd[0]) == "" {
		p.addf("%scmd: required with config.engine: %s, an argv list such as [/opt/server/bin/server, --port, \"${PORT}\"]", key, command.Name)
	}
	port := false
	for k, a := range cmd {
		if err := command.CheckTemplate(a); err != nil {
			p.addf("%scmd[%d]: %v", key, k, err)
		}
		port = port || command.UsesMacro(a, command.MacroPort)
	}
	names := make([]string, 0, len(env))
	for n := range env {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !envName.MatchString(n) {
			p.addf("%senv.%s: not a valid environment variable name", key, n)
		}
		if err := command.CheckTemplate(env[n]); err != nil {
			p.addf("%senv.%s: %v", key, n, err)
		}
		port = port || command.UsesMacro(env[n], command.MacroPort)
	}
	if len(cmd) > 0 && !port {
		p.addf("%scmd: must use ${PORT} (in cmd or env): the engine must listen on the port VramCram picks", key)
	}
	if health != "" && !strings.HasPrefix(health, "/") {
		p.addf("%shealth_path: must start with '/', got %q", key, health)
	}
	for k, r := range routes {
		if !strings.HasPrefix(r, "/") {
			p.addf("%sroutes[%d]: must be a path starting with '/', got %q", key, k, r)
		}
	}
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		p.addf("%s: must be one of %s, got %q", key, strings.Join(allowed, ", "), v)
	}
}

// isLoopbackHost reports whether a listen host serves only this machine.
// Names other than localhost count as remote: what they resolve to can change.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Budget returns the VRAM, in MB, that models may reserve when NVML is not
// available: vram.total_mb minus vram.safety_margin_mb.
func (c *Config) Budget() int {
	return c.VRAM.TotalMB - c.VRAM.SafetyMarginMB
}

// LLMByName returns the LLM model called name.
func (c *Config) LLMByName(name string) (LLMModel, bool) {
	for _, m := range c.Models.LLM {
		if m.Name == name {
			return m, true
		}
	}
	return LLMModel{}, false
}

// DiffusionByName returns the diffusion model called name.
func (c *Config) DiffusionByName(name string) (DiffusionModel, bool) {
	for _, m := range c.Models.Diffusion {
		if m.Name == name {
			return m, true
		}
	}
	return DiffusionModel{}, false
}

// ModelNames returns the names of all configured models, LLMs first, in
// config order.
func (c *Config) ModelNames() []string {
	names := make([]string, 0, len(c.Models.LLM)+len(c.Models.Diffusion))
	for _, m := range c.Models.LLM {
		names = append(names, m.Name)
	}
	for _, m := range c.Models.Diffusion {
		names = append(names, m.Name)
	}
	return names
}
