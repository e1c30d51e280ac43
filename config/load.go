package config

// Configuration: defaults, then the YAML file, then VRAMCRAM_* environment
// overrides, then validation. Every problem found on the way (unknown keys,
// wrong types, invalid values) is collected with its full key path and
// returned at once in a *Error, so a user fixes a config in one round.
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
	"reflect"
	"slices"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// envPrefix marks the environment variables that override config keys:
// VRAMCRAM_SERVER__PORT=9000 sets server.port.
const envPrefix = "VRAMCRAM_"

// envNotKeys are VRAMCRAM_ variables that are not config keys and so are
// neither applied nor reported as unknown. VRAMCRAM_CONFIG names the file.
var envNotKeys = map[string]bool{
	"VRAMCRAM_CONFIG":  true,
	"VRAMCRAM_URL":     true, // client commands: the server's address (cli.EnvURL)
	"VRAMCRAM_API_KEY": true, // client commands: the Bearer key (cli.EnvAPIKey)
}

// Error lists every problem found while loading a configuration.
// Problems start with the key path they concern, e.g.
// "server.port: expected integer, got \"abc\"".
type Error struct {
	Path     string // the config file; "" when none was read
	Problems []string
}

// Error returns the problems one per line, each prefixed with the file path.
func (e *Error) Error() string {
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

// Load builds the configuration from Default, then the YAML file
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
// a *Error listing every problem (bad YAML, unknown keys, wrong types,
// invalid values) otherwise.
func Load(path string, environ []string) (*Config, error) {
	cfg := Default()
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
		return nil, &Error{Path: path, Problems: d.problems}
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
