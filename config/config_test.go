package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeConfig writes body to a config file in a fresh temp dir.
func writeConfig(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads body (no file when body is "") with environ and fails the
// test on any error.
func mustLoad(t *testing.T, body string, environ []string) *Config {
	t.Helper()
	path := ""
	if body != "" {
		path = writeConfig(t, body)
	}
	cfg, err := Load(path, environ)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return cfg
}

// loadProblems loads body with environ and returns the problems of the
// *ConfigError it must fail with.
func loadProblems(t *testing.T, body string, environ []string) []string {
	t.Helper()
	path := ""
	if body != "" {
		path = writeConfig(t, body)
	}
	cfg, err := Load(path, environ)
	if err == nil {
		t.Fatalf("LoadConfig succeeded, want a *ConfigError; config: %+v", cfg)
	}
	if cfg != nil {
		t.Errorf("LoadConfig returned a config with error %v", err)
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("LoadConfig error is %T (%v), want *ConfigError", err, err)
	}
	if cerr.Path != path {
		t.Errorf("ConfigError.Path = %q, want %q", cerr.Path, path)
	}
	return cerr.Problems
}

// requireProblems checks that every want is a substring of some problem.
func requireProblems(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, g := range got {
			if strings.Contains(g, w) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no problem contains %q; problems:\n  %s", w, strings.Join(got, "\n  "))
		}
	}
}

func TestLoadConfig_Defaults(t *testing.T) {
	t.Parallel()
	want := Default()
	for _, tc := range []struct {
		name    string
		body    string
		environ []string
	}{
		{name: "NoFile"},
		{name: "EmptyFile", body: "\n"},
		{name: "CommentsOnly", body: "# nothing here\n"},
		{name: "NullSections", body: "server:\nstorage:\nmodels:\n"},
		{name: "NullValuesKeepDefaults", body: "server:\n  port: ~\n  host: null\n"},
		{name: "OtherEnvIgnored", environ: []string{"PATH=/bin", "HOME=/root", "vramcram_server__port=1", "VRAMCRAM_CONFIG=/etc/x.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustLoad(t, tc.body, tc.environ)
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("config = %+v\nwant %+v", *got, want)
			}
		})
	}

	// Spot-check the documented values, so DefaultConfig itself is pinned.
	d := Default()
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"server.host", d.Server.Host, "127.0.0.1"},
		{"server.port", d.Server.Port, 8000},
		{"server.metrics_port", d.Server.MetricsPort, 9090},
		{"server.api_keys", len(d.Server.APIKeys), 0},
		{"server.allow_insecure_remote", d.Server.AllowInsecureRemote, false},
		{"server.max_body_bytes", d.Server.MaxBodyBytes, int64(1 << 20)},
		{"server.max_prompt_chars", d.Server.MaxPromptChars, 100000},
		{"storage.data_dir", d.Storage.DataDir, "./data"},
		{"storage.retention_hours", d.Storage.RetentionHours, 168},
		{"vram.total_mb", d.VRAM.TotalMB, 24576},
		{"vram.safety_margin_mb", d.VRAM.SafetyMarginMB, 1024},
		{"vram.monitoring_interval_seconds", d.VRAM.MonitoringIntervalSeconds, 5},
		{"inference.llama_server_path", d.Inference.LlamaServerPath, "llama-server"},
		{"inference.sd_path", d.Inference.SDPath, "sd-cli"},
		{"inference.sd_server_path", d.Inference.SDServerPath, "sd-server"},
		{"agents.heartbeat_interval_seconds", d.Agents.HeartbeatIntervalSeconds, 10},
		{"agents.heartbeat_timeout_seconds", d.Agents.HeartbeatTimeoutSeconds, 30},
		{"agents.worker_ready_timeout_seconds", d.Agents.WorkerReadyTimeoutSeconds, 60},
		{"agents.graceful_shutdown_timeout_seconds", d.Agents.GracefulShutdownTimeoutSeconds, 300},
		{"agents.stop_grace_seconds", d.Agents.StopGraceSeconds, 10},
		{"scheduling.policy", d.Scheduling.Policy, "batch"},
		{"scheduling.max_wait_seconds", d.Scheduling.MaxWaitSeconds, 30},
		{"scheduling.max_queue", d.Scheduling.MaxQueue, 10000},
		{"scheduling.max_attempts", d.Scheduling.MaxAttempts, 3},
		{"scheduling.interactive_priority", d.Scheduling.InteractivePriority, 10},
		{"logging.level", d.Logging.Level, "info"},
		{"logging.format", d.Logging.Format, "auto"},
		{"budget", d.Budget(), 24576 - 1024},
	} {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.key, c.got, c.want)
		}
	}
}

func TestLoadConfig_FileOverridesDefaults(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
server:
  port: 8080
  api_keys: [k1, k2]
  max_body_bytes: 2097152
vram:
  total_mb: 16384
  safety_margin_mb: 512
scheduling:
  policy: fifo
logging: {level: debug, format: json}
models:
  llm:
    - name: a
      model_path: ./a.gguf
      config: {parallel: 4}
    - name: b
      model_path: ./b.gguf
      vram_mb: 1000
      pinned: true
      config: {context_size: 2048, gpu_layers: -1, embeddings: true, extra_args: [--flash-attn, "on"]}
  diffusion:
    - name: sd
      model_path: ./sd.safetensors
      config: {steps: 4, cfg_scale: 1}
`, nil)

	want := Default()
	want.Server.Port = 8080
	want.Server.APIKeys = []string{"k1", "k2"}
	want.Server.MaxBodyBytes = 2 << 20
	want.VRAM.TotalMB = 16384
	want.VRAM.SafetyMarginMB = 512
	want.Scheduling.Policy = "fifo"
	want.Logging = LoggingConfig{Level: "debug", Format: "json"}
	want.Models.LLM = []LLMModel{
		{Name: "a", ModelPath: "./a.gguf", Config: LLMEngineConfig{ContextSize: 4096, GPULayers: 99, Parallel: 4, Engine: "llama-server"}},
		{Name: "b", ModelPath: "./b.gguf", VRAMMB: 1000, Pinned: true, Config: LLMEngineConfig{
			ContextSize: 2048, GPULayers: -1, Parallel: 1, Embeddings: true, ExtraArgs: []string{"--flash-attn", "on"}, Engine: "llama-server",
		}},
	}
	want.Models.Diffusion = []DiffusionModel{
		{Name: "sd", ModelPath: "./sd.safetensors", Config: DiffusionEngineConfig{
			Engine: "sd-cli", Width: 512, Height: 512, Steps: 4, CFGScale: 1, TimeoutSeconds: 600,
		}},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("config = %+v\nwant %+v", *cfg, want)
	}
	if got := cfg.Budget(); got != 16384-512 {
		t.Errorf("Budget() = %d, want %d", got, 16384-512)
	}
	if m, ok := cfg.LLMByName("b"); !ok || m.VRAMMB != 1000 {
		t.Errorf("LLMByName(b) = %+v, %v", m, ok)
	}
	if _, ok := cfg.LLMByName("sd"); ok {
		t.Error("LLMByName found a diffusion model")
	}
	if m, ok := cfg.DiffusionByName("sd"); !ok || m.Config.Steps != 4 {
		t.Errorf("DiffusionByName(sd) = %+v, %v", m, ok)
	}
	if got, want := cfg.ModelNames(), []string{"a", "b", "sd"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ModelNames() = %v, want %v", got, want)
	}
}

func TestLoadConfig_EnvOverrides(t *testing.T) {
	t.Parallel()
	const body = `
server:
  port: 8080
  host: 127.0.0.1
  api_keys: [file-key]
models:
  llm:
    - name: qwen2.5-7b
      model_path: ./q.gguf
      vram_mb: 5000
      config: {extra_args: [-v]}
`
	for _, tc := range []struct {
		name    string
		environ []string
		check   func(t *testing.T, c *Config)
	}{
		{
			name:    "Nested",
			environ: []string{"VRAMCRAM_SERVER__PORT=9000"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Port != 9000 {
					t.Errorf("server.port = %d, want 9000", c.Server.Port)
				}
			},
		},
		{
			name:    "UnderscoreInKey",
			environ: []string{"VRAMCRAM_SERVER__METRICS_PORT=0", "VRAMCRAM_AGENTS__STOP_GRACE_SECONDS=3"},
			check: func(t *testing.T, c *Config) {
				if c.Server.MetricsPort != 0 || c.Agents.StopGraceSeconds != 3 {
					t.Errorf("metrics_port = %d, stop_grace_seconds = %d", c.Server.MetricsPort, c.Agents.StopGraceSeconds)
				}
			},
		},
		{
			name:    "ListCommaSeparated",
			environ: []string{"VRAMCRAM_SERVER__API_KEYS=k1, k2,,k3"},
			check: func(t *testing.T, c *Config) {
				if want := []string{"k1", "k2", "k3"}; !reflect.DeepEqual(c.Server.APIKeys, want) {
					t.Errorf("api_keys = %q, want %q", c.Server.APIKeys, want)
				}
			},
		},
		{
			name:    "ListEmptyClears",
			environ: []string{"VRAMCRAM_SERVER__API_KEYS="},
			check: func(t *testing.T, c *Config) {
				if len(c.Server.APIKeys) != 0 {
					t.Errorf("api_keys = %q, want none", c.Server.APIKeys)
				}
			},
		},
		{
			name:    "ValueWithDotsNotSplit",
			environ: []string{"VRAMCRAM_SERVER__HOST=::1", "VRAMCRAM_STORAGE__DATA_DIR=./var/lib.d/vramcram", "VRAMCRAM_MODELS__LLM__0__NAME=qwen2.5-14b"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Host != "::1" || c.Storage.DataDir != "./var/lib.d/vramcram" || c.Models.LLM[0].Name != "qwen2.5-14b" {
					t.Errorf("host = %q, data_dir = %q, name = %q", c.Server.Host, c.Storage.DataDir, c.Models.LLM[0].Name)
				}
			},
		},
		{
			name: "ListElementByIndex",
			environ: []string{
				"VRAMCRAM_MODELS__LLM__0__VRAM_MB=7000",
				"VRAMCRAM_MODELS__LLM__0__CONFIG__CONTEXT_SIZE=16384",
				"VRAMCRAM_MODELS__LLM__0__CONFIG__EXTRA_ARGS=--flash-attn,on",
				"VRAMCRAM_MODELS__LLM__0__PINNED=true",
			},
			check: func(t *testing.T, c *Config) {
				m := c.Models.LLM[0]
				if m.VRAMMB != 7000 || m.Config.ContextSize != 16384 || !m.Pinned ||
					!reflect.DeepEqual(m.Config.ExtraArgs, []string{"--flash-attn", "on"}) {
					t.Errorf("model = %+v", m)
				}
				if m.Config.GPULayers != 99 || m.Name != "qwen2.5-7b" {
					t.Errorf("untouched fields changed: %+v", m)
				}
			},
		},
		{
			name:    "BoolAndFloat",
			environ: []string{"VRAMCRAM_SERVER__ALLOW_INSECURE_REMOTE=1", "VRAMCRAM_SERVER__HOST=0.0.0.0", "VRAMCRAM_SERVER__API_KEYS="},
			check: func(t *testing.T, c *Config) {
				if !c.Server.AllowInsecureRemote || c.Server.Host != "0.0.0.0" {
					t.Errorf("server = %+v", c.Server)
				}
			},
		},
		{
			name:    "ConfigVarIsNotAKey",
			environ: []string{"VRAMCRAM_CONFIG=/nonexistent.yaml"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Port != 8080 {
					t.Errorf("server.port = %d, want the file's 8080", c.Server.Port)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, mustLoad(t, body, tc.environ))
		})
	}

	t.Run("DiffusionFloat", func(t *testing.T) {
		t.Parallel()
		c := mustLoad(t, "models: {diffusion: [{name: sd, model_path: ./sd}]}", []string{
			"VRAMCRAM_MODELS__DIFFUSION__0__CONFIG__CFG_SCALE=1.5",
			"VRAMCRAM_MODELS__DIFFUSION__0__CONFIG__ENGINE=sd-server",
		})
		if e := c.Models.Diffusion[0].Config; e.CFGScale != 1.5 || e.Engine != "sd-server" {
			t.Errorf("diffusion config = %+v", e)
		}
	})
}

func TestLoadConfig_UnknownKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		body    string
		environ []string
		want    []string
	}{
		{
			name: "TopLevel",
			body: "sever: {port: 1}\n",
			want: []string{"sever: unknown key (did you mean server?)"},
		},
		{
			name: "Nested",
			body: "server: {prot: 9000}\n",
			want: []string{"server.prot: unknown key (did you mean port?)"},
		},
		{
			name: "InListElement",
			body: `
models:
  llm:
    - {name: a, model_path: ./a}
    - name: b
      model_path: ./b
      config:
        contxt_size: 8192
`,
			want: []string{"models.llm[1].config.contxt_size: unknown key"},
		},
		{
			name: "NoSuggestionWhenFar",
			body: "logging: {colour: true}\n",
			want: []string{"logging.colour: unknown key"},
		},
		{
			name: "DottedKeyQuoted",
			body: "server.port: 9000\n",
			want: []string{`"server.port": unknown key`},
		},
		{
			name: "CaseMatters",
			body: "server: {Port: 9000}\n",
			want: []string{"server.Port: unknown key (did you mean port?)"},
		},
		{
			name:    "Env",
			environ: []string{"VRAMCRAM_SERVER__PROT=9000"},
			want:    []string{"server.prot: unknown key (did you mean port?) (from VRAMCRAM_SERVER__PROT)"},
		},
		{
			name:    "EnvTopLevel",
			environ: []string{"VRAMCRAM_DEBUG=1"},
			want:    []string{"debug: unknown key (from VRAMCRAM_DEBUG)"},
		},
		{
			name:    "EnvSingleUnderscoreNesting",
			environ: []string{"VRAMCRAM_SERVER_PORT=9000"},
			want:    []string{"server_port: unknown key (from VRAMCRAM_SERVER_PORT)"},
		},
		{
			name:    "EnvBelowScalar",
			environ: []string{"VRAMCRAM_SERVER__PORT__X=1"},
			want:    []string{"server.port.x: unknown key (from VRAMCRAM_SERVER__PORT__X)"},
		},
		{
			name:    "EnvDotInName",
			environ: []string{"VRAMCRAM_SERVER.PORT=1"},
			want:    []string{`"server.port": unknown key (from VRAMCRAM_SERVER.PORT)`},
		},
		{
			name:    "EnvListIndexOutOfRange",
			environ: []string{"VRAMCRAM_MODELS__LLM__0__VRAM_MB=1"},
			want:    []string{"models.llm[0]: no such list element (the list has 0) (from VRAMCRAM_MODELS__LLM__0__VRAM_MB)"},
		},
		{
			name:    "EnvListNotIndex",
			environ: []string{"VRAMCRAM_MODELS__LLM__NAME=x"},
			want:    []string{"models.llm.name: unknown key (list elements are addressed by index: VRAMCRAM_MODELS__LLM__0__...)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := loadProblems(t, tc.body, tc.environ)
			requireProblems(t, got, tc.want...)
			if len(got) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n  %s", len(got), len(tc.want), strings.Join(got, "\n  "))
			}
		})
	}
}

func TestLoadConfig_TypeErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		body    string
		environ []string
		want    string
	}{
		{name: "IntFromString", body: "server: {port: abc}", want: `server.port: expected integer, got "abc"`},
		{name: "IntFromQuotedNumber", body: `server: {port: "8000"}`, want: `server.port: expected integer, got "8000"`},
		{name: "IntFromFraction", body: "server: {port: 80.5}", want: "server.port: expected integer, got 80.5"},
		{name: "IntFromList", body: "server: {port: [1]}", want: "server.port: expected integer, got list"},
		{name: "IntOverflow", body: "server: {max_body_bytes: 99999999999999999999}", want: "server.max_body_bytes: expected integer, got 1e+20"},
		{name: "BoolFromString", body: "server: {allow_insecure_remote: yes}", want: `server.allow_insecure_remote: expected boolean, got "yes"`},
		{name: "StringFromNumber", body: "models: {llm: [{name: 2.5, model_path: ./x}]}", want: "models.llm[0].name: expected string, got number (quote the value to make it a string)"},
		{name: "StringHidesValue", body: "server: {api_keys: secret-key}", want: "server.api_keys: expected list, got string"},
		{name: "SectionNotMapping", body: "server: 8000", want: "server: expected mapping, got number"},
		{name: "ModelsNotList", body: "models: {llm: {name: a}}", want: "models.llm: expected list of mappings, got mapping"},
		{name: "ModelNotMapping", body: "models: {llm: [a]}", want: "models.llm[0]: expected mapping, got string"},
		{name: "NullListElement", body: "models: {llm: [~]}", want: "models.llm[0]: empty list element"},
		{name: "StringFromTimestamp", body: "models: {llm: [{name: 2024-01-01, model_path: ./x}]}", want: "models.llm[0].name: expected string, got timestamp (quote the value"},
		{name: "FloatFromString", body: "models: {diffusion: [{name: a, model_path: x, config: {cfg_scale: high}}]}", want: `models.diffusion[0].config.cfg_scale: expected number, got "high"`},
		{name: "Env", environ: []string{"VRAMCRAM_SERVER__PORT=abc"}, want: `server.port: expected integer, got "abc" (from VRAMCRAM_SERVER__PORT)`},
		{name: "EnvBool", environ: []string{"VRAMCRAM_SERVER__ALLOW_INSECURE_REMOTE=maybe"}, want: `server.allow_insecure_remote: expected boolean, got "maybe"`},
		{name: "EnvSection", environ: []string{"VRAMCRAM_SERVER=x"}, want: "server: expected mapping, got string (from VRAMCRAM_SERVER)"},
		{name: "EnvModelList", environ: []string{"VRAMCRAM_MODELS__LLM=a,b"}, want: "models.llm: expected list of mappings, got string"},
		{name: "TopLevelNotMapping", body: "- a\n- b\n", want: "invalid YAML: "},
		{name: "BadYAML", body: "server: {port: 1\n", want: "invalid YAML: yaml: line"},
		{name: "DuplicateKey", body: "server: {port: 1, port: 2}\n", want: "invalid YAML: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// One problem each: no follow-on validation problem (such as
			// "models.llm[0].name: required") for a key that failed to decode.
			got := loadProblems(t, tc.body, tc.environ)
			requireProblems(t, got, tc.want)
			if len(got) != 1 {
				t.Errorf("got %d problems, want 1:\n  %s", len(got), strings.Join(got, "\n  "))
			}
		})
	}
}

func TestLoadConfig_AllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `
server:
  port: abc
  metrics_port: 70000
  typo: 1
vram:
  total_mb: 1000
  safety_margin_mb: 1000
scheduling:
  policy: random
models:
  llm:
    - name: dup
      model_path: ./a
      config: {parallel: 0, contxt_size: 1}
  diffusion:
    - name: dup
      model_path: ""
      config: {width: 500, engine: sd, steps: 0, cfg_scale: 31}
`)
	_, err := Load(path, []string{"VRAMCRAM_LOGGING__LEVEL=verbose", "VRAMCRAM_NOPE=1"})
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error = %v, want *ConfigError", err)
	}
	want := []string{
		// decoding: file, then environment
		`server.port: expected integer, got "abc"`,
		"server.typo: unknown key",
		"models.llm[0].config.contxt_size: unknown key",
		"nope: unknown key (from VRAMCRAM_NOPE)",
		// validation
		"server.metrics_port: must be a port between 1 and 65535, or 0 to disable, got 70000",
		"vram.safety_margin_mb: 1000 leaves no budget",
		`scheduling.policy: must be one of batch, fifo, got "random"`,
		`logging.level: must be one of debug, info, warn, error, got "verbose"`,
		"models.llm[0].config.parallel: must be between 1 and 64, got 0",
		`models.diffusion[0].name: "dup" is already used by models.llm[0]`,
		"models.diffusion[0].model_path: required",
		`models.diffusion[0].config.engine: must be one of sd-cli, sd-server, command, got "sd"`,
		"models.diffusion[0].config.width: must be a multiple of 8 between 64 and 4096, got 500",
		"models.diffusion[0].config.steps: must be between 1 and 150, got 0",
		"models.diffusion[0].config.cfg_scale: must be between 0 and 30, got 31",
	}
	requireProblems(t, cerr.Problems, want...)
	if len(cerr.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n  %s", len(cerr.Problems), len(want), strings.Join(cerr.Problems, "\n  "))
	}

	// Error() gives one line per problem, each prefixed with the file.
	lines := strings.Split(cerr.Error(), "\n")
	if len(lines) != len(cerr.Problems) {
		t.Fatalf("Error() has %d lines, want %d:\n%s", len(lines), len(cerr.Problems), cerr.Error())
	}
	for i, line := range lines {
		if line != path+": "+cerr.Problems[i] {
			t.Errorf("line %d = %q, want %q", i, line, path+": "+cerr.Problems[i])
		}
	}
}

func TestConfigError_Error(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  *Error
		want string
	}{
		{"NoFile", &Error{Problems: []string{"a: x", "b: y"}}, "config: a: x\nconfig: b: y"},
		{"File", &Error{Path: "/etc/v.yaml", Problems: []string{"a: x"}}, "/etc/v.yaml: a: x"},
		{"Empty", &Error{Path: "v.yaml"}, "v.yaml: invalid configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadConfig_MissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error = %v, want fs.ErrNotExist", err)
	}
	var cerr *Error
	if errors.As(err, &cerr) {
		t.Errorf("a missing file is not a *ConfigError: %v", err)
	}
}

func TestLoadConfig_NamesWithDots(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
models:
  llm:
    - name: qwen2.5-7b
      model_path: ./models/qwen2.5-7b-instruct.Q4_K_M.gguf
    - name: llama-3.1.8b
      model_path: ./models/llama.gguf
  diffusion:
    - name: sd.v1.5
      model_path: ./models/v1-5-pruned-emaonly.safetensors
`, []string{"VRAMCRAM_MODELS__LLM__1__VRAM_MB=4096"})
	if got, want := cfg.ModelNames(), []string{"qwen2.5-7b", "llama-3.1.8b", "sd.v1.5"}; !reflect.DeepEqual(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	if m, ok := cfg.LLMByName("llama-3.1.8b"); !ok || m.VRAMMB != 4096 {
		t.Errorf("LLMByName(llama-3.1.8b) = %+v, %v", m, ok)
	}
	if m, _ := cfg.LLMByName("qwen2.5-7b"); m.ModelPath != "./models/qwen2.5-7b-instruct.Q4_K_M.gguf" {
		t.Errorf("model_path = %q", m.ModelPath)
	}
}

// TestLoadConfig_SeedKeys loads the keys DESIGN.md fixes as the contract,
// in the flow style it shows them.
func TestLoadConfig_SeedKeys(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, `
server:    {host: 127.0.0.1, port: 8000, metrics_port: 9090, api_keys: []}
storage:   {data_dir: ./data}              # bbolt file, results, pid records
vram:      {total_mb: 24576, safety_margin_mb: 1024, monitoring_interval_seconds: 5}
inference: {llama_server_path: llama-server, sd_path: sd-cli, sd_server_path: sd-server}
agents:    {heartbeat_interval_seconds: 10, heartbeat_timeout_seconds: 30,
            worker_ready_timeout_seconds: 60, graceful_shutdown_timeout_seconds: 300}
scheduling: {policy: batch, max_wait_seconds: 30, max_queue: 10000, max_attempts: 3}
models:
  llm:
    - name: llama-ministral
      model_path: ./models/ministral-8b-instruct-q4_k_m.gguf
      vram_mb: 6144                         # optional once estimates exist
      config: {context_size: 4096, gpu_layers: 99, parallel: 2, extra_args: []}
  diffusion:
    - name: stable-diffusion-turbo
      model_path: ./models/sdxl_turbo_fp16.safetensors
      vram_mb: 8192
      config: {engine: sd-cli, width: 512, height: 512, steps: 4, extra_args: []}
`, nil)
	if m, ok := cfg.LLMByName("llama-ministral"); !ok || m.VRAMMB != 6144 || m.Config.Parallel != 2 {
		t.Errorf("llama-ministral = %+v, %v", m, ok)
	}
	if m, ok := cfg.DiffusionByName("stable-diffusion-turbo"); !ok || m.VRAMMB != 8192 || m.Config.Steps != 4 || m.Config.CFGScale != 7 {
		t.Errorf("stable-diffusion-turbo = %+v, %v", m, ok)
	}
}

func TestLoadConfig_Example(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../config.example.yaml", nil)
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if got, want := cfg.ModelNames(), []string{"llama-ministral", "qwen2.5-7b", "nomic-embed-text-v1.5", "stable-diffusion-turbo"}; !reflect.DeepEqual(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	if m, _ := cfg.LLMByName("llama-ministral"); m.VRAMMB != 6144 {
		t.Errorf("llama-ministral vram_mb = %d, want 6144", m.VRAMMB)
	}
	if m, _ := cfg.DiffusionByName("stable-diffusion-turbo"); m.VRAMMB != 8192 {
		t.Errorf("stable-diffusion-turbo vram_mb = %d, want 8192", m.VRAMMB)
	}

	// The example documents every key: each one the decoder knows appears in it.
	body, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range allKeys(reflect.TypeFor[Config]()) {
		if !strings.Contains(string(body), key+":") {
			t.Errorf("config.example.yaml does not mention %s", key)
		}
	}
}

// allKeys lists the koanf tags of t and its nested structs (list elements
// included).
func allKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		keys = append(keys, f.Tag.Get("koanf"))
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, allKeys(ft)...)
		}
	}
	return keys
}

func TestConfig_ValidateHost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		host     string
		apiKeys  []string
		insecure bool
		want     string // substring of the one problem; "" for valid
	}{
		{name: "IPv4Loopback", host: "127.0.0.1"},
		{name: "IPv4LoopbackRange", host: "127.0.0.2"},
		{name: "IPv6Loopback", host: "::1"},
		{name: "IPv6LoopbackBracketed", host: "[::1]"},
		{name: "Localhost", host: "localhost"},
		{name: "AllInterfacesNoKeys", host: "0.0.0.0", want: `server.host: "0.0.0.0" is reachable from other machines but server.api_keys is empty; set server.api_keys to require a bearer key, or set server.allow_insecure_remote: true`},
		{name: "IPv6AllNoKeys", host: "::", want: "server.api_keys is empty"},
		{name: "LANAddressNoKeys", host: "192.168.1.10", want: "server.api_keys is empty"},
		{name: "HostNameNoKeys", host: "gpu-box.lan", want: "server.api_keys is empty"},
		{name: "RemoteWithKeys", host: "0.0.0.0", apiKeys: []string{"s3cret"}},
		{name: "RemoteInsecureAllowed", host: "0.0.0.0", insecure: true},
		{name: "EmptyKey", host: "127.0.0.1", apiKeys: []string{"ok", " "}, want: "server.api_keys[1]: must not be empty"},
		{name: "EmptyHost", host: "", want: "server.host: must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			c.Server.Host, c.Server.APIKeys, c.Server.AllowInsecureRemote = tc.host, tc.apiKeys, tc.insecure
			got := c.Validate()
			if tc.want == "" {
				if len(got) != 0 {
					t.Errorf("Validate() = %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("Validate() = %q, want one problem containing %q", got, tc.want)
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	llm := func(f func(m *LLMModel)) func(c *Config) {
		return func(c *Config) {
			m := LLMModel{Name: "m", ModelPath: "./m.gguf"}
			m.setDefaults()
			f(&m)
			c.Models.LLM = append(c.Models.LLM, m)
		}
	}
	diffusion := func(f func(m *DiffusionModel)) func(c *Config) {
		return func(c *Config) {
			m := DiffusionModel{Name: "d", ModelPath: "./d.safetensors"}
			m.setDefaults()
			f(&m)
			c.Models.Diffusion = append(c.Models.Diffusion, m)
		}
	}
	for _, tc := range []struct {
		name   string
		modify func(c *Config)
		want   string // substring of the one problem; "" for valid
	}{
		{"Defaults", func(c *Config) {}, ""},
		{"PortZero", func(c *Config) { c.Server.Port = 0 }, "server.port: must be a port between 1 and 65535, got 0"},
		{"PortHigh", func(c *Config) { c.Server.Port = 65536 }, "server.port: must be a port"},
		{"MetricsDisabled", func(c *Config) { c.Server.MetricsPort = 0 }, ""},
		{"MetricsNegative", func(c *Config) { c.Server.MetricsPort = -1 }, "server.metrics_port: must be a port"},
		{"PortsCollide", func(c *Config) { c.Server.MetricsPort = c.Server.Port }, "server.metrics_port: 8000 is also server.port"},
		{"BodyZero", func(c *Config) { c.Server.MaxBodyBytes = 0 }, "server.max_body_bytes: must be at least 1"},
		{"PromptZero", func(c *Config) { c.Server.MaxPromptChars = 0 }, "server.max_prompt_chars: must be at least 1"},
		{"DataDirEmpty", func(c *Config) { c.Storage.DataDir = "" }, "storage.data_dir: must not be empty"},
		{"RetentionForever", func(c *Config) { c.Storage.RetentionHours = 0 }, ""},
		{"RetentionNegative", func(c *Config) { c.Storage.RetentionHours = -1 }, "storage.retention_hours"},
		// Past ten years a duration would wrap (99999999 hours became a
		// negative retention that deleted every finished job).
		{"KeyWithNewline", func(c *Config) { c.Server.APIKeys = []string{"secret\n"} }, "server.api_keys[0]: must not start or end with spaces"},
		{"RetentionHuge", func(c *Config) { c.Storage.RetentionHours = 99999999 }, "storage.retention_hours: must be at most 87600 (ten years), got 99999999"},
		{"RetentionTenYears", func(c *Config) { c.Storage.RetentionHours = 87600 }, ""},
		{"TTLHuge", llm(func(m *LLMModel) { m.TTLSeconds = 18446744074 }), "models.llm[0].ttl_seconds: must be at most"},
		{"DiffusionTimeoutHuge", diffusion(func(m *DiffusionModel) { m.Config.TimeoutSeconds = 1 << 40 }), "models.diffusion[0].config.timeout_seconds: must be at most"},
		{"AgingHuge", func(c *Config) { c.Scheduling.AgingSeconds = 1 << 40 }, "scheduling.aging_seconds: must be at most"},
		{"TotalZero", func(c *Config) { c.VRAM.TotalMB = 0 }, "vram.total_mb: must be more than 0"},
		{"MarginNegative", func(c *Config) { c.VRAM.SafetyMarginMB = -1 }, "vram.safety_margin_mb: must be 0 or more"},
		{"MarginZero", func(c *Config) { c.VRAM.SafetyMarginMB = 0 }, ""},
		{"MarginAll", func(c *Config) { c.VRAM.SafetyMarginMB = c.VRAM.TotalMB }, "vram.safety_margin_mb: 24576 leaves no budget"},
		{"MonitoringZero", func(c *Config) { c.VRAM.MonitoringIntervalSeconds = 0 }, "vram.monitoring_interval_seconds: must be at least 1"},
		{"LlamaPathEmpty", func(c *Config) { c.Inference.LlamaServerPath = "" }, "inference.llama_server_path: must not be empty"},
		{"HeartbeatZero", func(c *Config) { c.Agents.HeartbeatIntervalSeconds = 0 }, "agents.heartbeat_interval_seconds: must be at least 1"},
		{"HeartbeatTimeoutShort", func(c *Config) { c.Agents.HeartbeatTimeoutSeconds = 5 }, "agents.heartbeat_timeout_seconds: 5 is shorter than agents.heartbeat_interval_seconds (10)"},
		{"HeartbeatTimeoutEqual", func(c *Config) { c.Agents.HeartbeatTimeoutSeconds = 10 }, ""},
		{"ReadyZero", func(c *Config) { c.Agents.WorkerReadyTimeoutSeconds = 0 }, "agents.worker_ready_timeout_seconds"},
		{"ShutdownZero", func(c *Config) { c.Agents.GracefulShutdownTimeoutSeconds = 0 }, "agents.graceful_shutdown_timeout_seconds"},
		{"GraceZero", func(c *Config) { c.Agents.StopGraceSeconds = 0 }, "agents.stop_grace_seconds"},
		{"PolicyFIFO", func(c *Config) { c.Scheduling.Policy = "fifo" }, ""},
		{"PolicyUpper", func(c *Config) { c.Scheduling.Policy = "FIFO" }, "scheduling.policy"},
		{"MaxWaitZero", func(c *Config) { c.Scheduling.MaxWaitSeconds = 0 }, ""},
		{"MaxWaitNegative", func(c *Config) { c.Scheduling.MaxWaitSeconds = -1 }, "scheduling.max_wait_seconds"},
		{"MaxQueueZero", func(c *Config) { c.Scheduling.MaxQueue = 0 }, "scheduling.max_queue"},
		{"MaxAttemptsZero", func(c *Config) { c.Scheduling.MaxAttempts = 0 }, "scheduling.max_attempts: must be between 1 and 100, got 0"},
		{"MaxAttemptsHigh", func(c *Config) { c.Scheduling.MaxAttempts = 101 }, "scheduling.max_attempts"},
		{"InteractivePriorityHigh", func(c *Config) { c.Scheduling.InteractivePriority = 101 },
			"scheduling.interactive_priority: must be between -100 and 100, got 101"},
		{"LevelWarn", func(c *Config) { c.Logging.Level = "warn" }, ""},
		{"LevelBad", func(c *Config) { c.Logging.Level = "trace" }, "logging.level"},
		{"FormatBad", func(c *Config) { c.Logging.Format = "xml" }, "logging.format"},
		{"AgingNegative", func(c *Config) { c.Scheduling.AgingSeconds = -1 }, "scheduling.aging_seconds"},
		{"DevicesTwoGPUs", func(c *Config) {
			c.VRAM.Devices = []DeviceConfig{{Index: 0, TotalMB: 8000}, {Index: 1, TotalMB: 8000}}
		}, ""},
		{"DeviceTwice", func(c *Config) { c.VRAM.Devices = []DeviceConfig{{Index: 1}, {Index: 1}} }, "vram.devices[1]: GPU 1 is listed twice"},
		{"DeviceNoBudget", func(c *Config) { c.VRAM.Devices = []DeviceConfig{{TotalMB: 500}} }, "vram.devices[0].total_mb: 500 leaves no budget"},
		{"GPUsSplit", llm(func(m *LLMModel) { m.GPUs = []int{0, 1} }), ""},
		{"GPUNegative", llm(func(m *LLMModel) { m.GPUs = []int{-1} }), "models.llm[0].gpus[0]: must be 0 or more"},
		{"GPUTwice", llm(func(m *LLMModel) { m.GPUs = []int{0, 0} }), "models.llm[0].gpus[1]: GPU 0 is listed twice"},
		{"GPUNotListed", func(c *Config) {
			c.VRAM.Devices = []DeviceConfig{{TotalMB: 8000}}
			llm(func(m *LLMModel) { m.GPUs = []int{1} })(c)
		}, "models.llm[0].gpus[0]: 1 is not one of the 1 entries of vram.devices"},
		{"NoModels", func(c *Config) { c.Models = ModelsConfig{} }, ""},
		{"LLMValid", llm(func(m *LLMModel) { m.Name = "Qwen2.5-7B_instruct" }), ""},
		{"LLMNameEmpty", llm(func(m *LLMModel) { m.Name = "" }), "models.llm[0].name: required"},
		{"LLMNameLeadingDot", llm(func(m *LLMModel) { m.Name = ".hidden" }), `models.llm[0].name: ".hidden" is not a valid name`},
		{"LLMNameSlash", llm(func(m *LLMModel) { m.Name = "a/b" }), "is not a valid name"},
		{"LLMNameSpace", llm(func(m *LLMModel) { m.Name = "a b" }), "is not a valid name"},
		{"LLMName64", llm(func(m *LLMModel) { m.Name = strings.Repeat("a", 64) }), ""},
		{"LLMName65", llm(func(m *LLMModel) { m.Name = strings.Repeat("a", 65) }), "is not a valid name"},
		{"LLMPathEmpty", llm(func(m *LLMModel) { m.ModelPath = "" }), "models.llm[0].model_path: required"},
		{"LLMVRAMUnknown", llm(func(m *LLMModel) { m.VRAMMB = 0 }), ""},
		{"LLMVRAMNegative", llm(func(m *LLMModel) { m.VRAMMB = -1 }), "models.llm[0].vram_mb: must be at least 0"},
		{"LLMTTLNegative", llm(func(m *LLMModel) { m.TTLSeconds = -1 }), "models.llm[0].ttl_seconds"},
		{"LLMContextZero", llm(func(m *LLMModel) { m.Config.ContextSize = 0 }), "models.llm[0].config.context_size"},
		{"LLMGPULayersAuto", llm(func(m *LLMModel) { m.Config.GPULayers = -1 }), ""},
		{"LLMGPULayersBad", llm(func(m *LLMModel) { m.Config.GPULayers = -2 }), "models.llm[0].config.gpu_layers: must be at least -1"},
		{"LLMParallelZero", llm(func(m *LLMModel) { m.Config.Parallel = 0 }), "models.llm[0].config.parallel"},
		{"LLMParallel64", llm(func(m *LLMModel) { m.Config.Parallel = 64 }), ""},
		{"LLMParallel65", llm(func(m *LLMModel) { m.Config.Parallel = 65 }), "models.llm[0].config.parallel"},
		{"LLMPoolingMean", llm(func(m *LLMModel) { m.Config.Embeddings, m.Config.Pooling = true, "mean" }), ""},
		{"LLMPoolingUnknown", llm(func(m *LLMModel) { m.Config.Embeddings, m.Config.Pooling = true, "max" }), "models.llm[0].config.pooling: must be one of none, mean"},
		{"LLMPoolingNoEmbeddings", llm(func(m *LLMModel) { m.Config.Pooling = "cls" }), "models.llm[0].config.pooling: only with embeddings: true"},
		{"DiffusionValid", diffusion(func(m *DiffusionModel) { m.Config.Engine = "sd-server"; m.Config.CFGScale = 0 }), ""},
		{"DiffusionEngineBad", diffusion(func(m *DiffusionModel) { m.Config.Engine = "sd" }), "models.diffusion[0].config.engine"},
		{"DiffusionWidthOdd", diffusion(func(m *DiffusionModel) { m.Config.Width = 513 }), "models.diffusion[0].config.width"},
		{"DiffusionWidthSmall", diffusion(func(m *DiffusionModel) { m.Config.Width = 56 }), "models.diffusion[0].config.width"},
		{"DiffusionHeightBig", diffusion(func(m *DiffusionModel) { m.Config.Height = 4104 }), "models.diffusion[0].config.height"},
		{"DiffusionSize4096", diffusion(func(m *DiffusionModel) { m.Config.Width, m.Config.Height = 4096, 64 }), ""},
		{"DiffusionSteps151", diffusion(func(m *DiffusionModel) { m.Config.Steps = 151 }), "models.diffusion[0].config.steps"},
		{"DiffusionCFGNegative", diffusion(func(m *DiffusionModel) { m.Config.CFGScale = -0.5 }), "models.diffusion[0].config.cfg_scale"},
		{"DiffusionCFGNaN", diffusion(func(m *DiffusionModel) { m.Config.CFGScale = nan() }), "models.diffusion[0].config.cfg_scale"},
		{"DuplicateAcrossLists", func(c *Config) {
			llm(func(m *LLMModel) { m.Name = "x" })(c)
			diffusion(func(m *DiffusionModel) { m.Name = "x" })(c)
		}, `models.diffusion[0].name: "x" is already used by models.llm[0]`},
		{"DuplicateInList", func(c *Config) {
			llm(func(m *LLMModel) {})(c)
			llm(func(m *LLMModel) {})(c)
		}, `models.llm[1].name: "m" is already used by models.llm[0]`},
		{"NamesCaseSensitive", func(c *Config) {
			llm(func(m *LLMModel) { m.Name = "A" })(c)
			llm(func(m *LLMModel) { m.Name = "a" })(c)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tc.modify(&c)
			got := c.Validate()
			if tc.want == "" {
				if len(got) != 0 {
					t.Errorf("Validate() = %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("Validate() = %q, want one problem containing %q", got, tc.want)
			}
		})
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

// FuzzLoadConfig feeds arbitrary bytes as the config file: LoadConfig must
// not panic and must return either a valid config or a *ConfigError.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"",
		"server: {port: abc}",
		"models: {llm: [{name: qwen2.5-7b, model_path: ./q}]}",
		"models: {llm: [~, 1, [a], {config: {extra_args: [1, [2]]}}]}",
		"a: &a [*a]",
		"server: {max_body_bytes: 1e400}",
		"? [a]\n: b\n",
		"models:\n  diffusion:\n    - {name: d, model_path: x, config: {cfg_scale: .nan}}\n",
		"{1: 2, true: false, null: ~}",
		"--- !!binary aGVsbG8=",
	} {
		f.Add([]byte(seed))
	}
	environ := []string{"VRAMCRAM_SERVER__PORT=8001", "VRAMCRAM_MODELS__LLM__0__VRAM_MB=1"}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, env := range [][]string{nil, environ} {
			cfg, err := Load(path, env)
			if err != nil {
				if cfg != nil {
					t.Fatalf("config and error both returned: %v", err)
				}
				var cerr *Error
				if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
					t.Fatalf("error %T %q, want a *ConfigError with problems", err, err)
				}
				continue
			}
			if cfg == nil {
				t.Fatal("neither config nor error")
			}
			if problems := cfg.Validate(); len(problems) != 0 {
				t.Fatalf("loaded config is invalid: %q", problems)
			}
		}
	})
}
