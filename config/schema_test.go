package config

// config.schema.json is generated from the Config struct by reflection (the
// same koanf tags the decoder walks), with defaults from DefaultConfig and the
// list elements' setDefaults, and the closed value sets of schemaEnums. The
// committed file must equal the generated one; after adding a config key run
//
//	go test -run TestConfigSchema_UpToDate -update-schema .
//
// The example config is then checked against the committed schema by a small
// validator below (type, properties, additionalProperties, items, enum,
// required: the keywords the generator emits).

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/vramcram/vramcram/engine/command"
	"github.com/vramcram/vramcram/engine/llamacpp"
)

const schemaFile = "../config.schema.json"

var updateSchema = flag.Bool("update-schema", false, "rewrite "+schemaFile+" from the Config struct")

// schemaEnums are the closed value sets of string keys, by key path ("[]"
// stands for any list element). Validate checks the same sets;
// TestConfigSchema_EnumsMatchValidation keeps the two in step.
var schemaEnums = map[string][]string{
	"scheduling.policy":                {"batch", "fifo"},
	"logging.level":                    {"debug", "info", "warn", "error"},
	"logging.format":                   {"auto", "text", "json"},
	"models.llm[].config.engine":       {llamacpp.Name, command.Name},
	"models.diffusion[].config.engine": {"sd-cli", "sd-server", command.Name},
}

// schemaRequired are the keys an object must have, by key path.
var schemaRequired = map[string][]string{
	"models.llm[]":       {"name"},
	"models.diffusion[]": {"name"},
}

// schemaDescriptions are shown by editors on hover; config.example.yaml
// documents every key in full.
var schemaDescriptions = map[string]string{
	"":                  "VramCram daemon configuration. Generated from the Config struct; config.example.yaml documents every key.",
	"server":            "HTTP API listener, authentication and request limits.",
	"storage":           "Where the queue database, results and uploads live.",
	"vram":              "VRAM budget, GPUs used and NVML polling.",
	"inference":         "Engine binaries (looked up in PATH when they contain no slash).",
	"agents":            "Engine children: heartbeats, readiness, shutdown.",
	"scheduling":        "Dispatch policy and queue limits.",
	"logging":           "Log level and format.",
	"models":            "The models that may be served; names are unique across both lists.",
	"models.llm":        "Models served by llama-server or a command engine.",
	"models.diffusion":  "Models served by sd-cli, sd-server or a command engine.",
	"server.api_keys":   "Bearer keys accepted by the API; empty: no authentication.",
	"vram.devices":      "GPUs to use (by uuid, else index) or, without NVML, their sizes.",
	"scheduling.policy": "batch groups requests by loaded model; fifo serves in arrival order.",
}

// jsonSchema is the subset of JSON Schema (draft 2020-12) that the generator
// writes and the validator reads. Field order is the order in the file.
type jsonSchema struct {
	Schema      string                 `json:"$schema,omitempty"`
	Title       string                 `json:"title,omitempty"`
	Description string                 `json:"description,omitempty"`
	Type        string                 `json:"type,omitempty"`
	Enum        []any                  `json:"enum,omitempty"`
	Default     any                    `json:"default,omitempty"`
	Items       *jsonSchema            `json:"items,omitempty"`
	Properties  map[string]*jsonSchema `json:"properties,omitempty"`
	Required    []string               `json:"required,omitempty"`
	// AdditionalProperties is false (closed object) or a schema (map values).
	AdditionalProperties json.RawMessage `json:"additionalProperties,omitempty"`
}

// generateConfigSchema returns the schema of Config as indented JSON.
func generateConfigSchema(t *testing.T) []byte {
	t.Helper()
	root := schemaOf(t, "", reflect.TypeFor[Config](), reflect.ValueOf(Default()))
	root.Schema = "https://json-schema.org/draft/2020-12/schema"
	root.Title = "VramCram configuration"
	root.Default = nil
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		t.Fatalf("marshal schema: %v", err)
	}
	return append(out, '\n')
}

// schemaOf builds the schema of the config key at path, of Go type typ, whose
// default value is def (the zero Value when there is none).
func schemaOf(t *testing.T, path string, typ reflect.Type, def reflect.Value) *jsonSchema {
	t.Helper()
	s := &jsonSchema{Description: schemaDescriptions[path]}
	switch typ.Kind() {
	case reflect.Struct:
		s.Type = "object"
		s.Properties = make(map[string]*jsonSchema, typ.NumField())
		for i := range typ.NumField() {
			key := typ.Field(i).Tag.Get("koanf")
			if key == "" {
				t.Fatalf("%s: field %s has no koanf tag", path, typ.Field(i).Name)
			}
			var fd reflect.Value
			if def.IsValid() {
				fd = def.Field(i)
			}
			s.Properties[key] = schemaOf(t, joinKey(path, key), typ.Field(i).Type, fd)
		}
		s.Required = schemaRequired[path]
		s.AdditionalProperties = json.RawMessage("false")
		return s
	case reflect.Slice:
		s.Type = "array"
		s.Items = schemaOf(t, path+"[]", typ.Elem(), elemDefault(typ.Elem()))
		if def.IsValid() && def.Len() > 0 && typ.Elem().Kind() != reflect.Struct {
			s.Default = def.Interface()
		}
		return s
	case reflect.Map:
		if typ.Key().Kind() != reflect.String {
			t.Fatalf("%s: map key kind %s has no JSON Schema form", path, typ.Key().Kind())
		}
		s.Type = "object"
		values, err := json.Marshal(schemaOf(t, path+".*", typ.Elem(), reflect.Value{}))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		s.AdditionalProperties = values
		return s
	case reflect.String:
		s.Type = "string"
		if def.IsValid() && def.String() != "" {
			s.Default = def.String()
		}
	case reflect.Bool:
		s.Type = "boolean"
		if def.IsValid() {
			s.Default = def.Bool()
		}
	case reflect.Int, reflect.Int64:
		s.Type = "integer"
		if def.IsValid() {
			s.Default = def.Int()
		}
	case reflect.Float64:
		s.Type = "number"
		if def.IsValid() {
			s.Default = def.Float()
		}
	default:
		t.Fatalf("%s: Go kind %s has no JSON Schema mapping; extend schemaOf", path, typ.Kind())
	}
	if values, ok := schemaEnums[path]; ok {
		for _, v := range values {
			s.Enum = append(s.Enum, v)
		}
	}
	return s
}

// elemDefault is a list element as the decoder starts it: zero, then its
// setDefaults when it has one. Elements that are not structs have no default.
func elemDefault(typ reflect.Type) reflect.Value {
	if typ.Kind() != reflect.Struct {
		return reflect.Value{}
	}
	v := reflect.New(typ)
	if d, ok := v.Interface().(defaulter); ok {
		d.setDefaults()
	}
	return v.Elem()
}

// TestConfigSchema_UpToDate is not parallel: with -update-schema it writes the
// file before the parallel tests read it.
func TestConfigSchema_UpToDate(t *testing.T) {
	want := generateConfigSchema(t)
	if *updateSchema {
		if err := os.WriteFile(schemaFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("%v; create it with: go test -run TestConfigSchema_UpToDate -update-schema .", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what the Config struct generates (a config key was added or changed); regenerate it with:\n\tgo test -run TestConfigSchema_UpToDate -update-schema ./config", schemaFile)
	}
}

// loadSchemaFile reads the committed schema.
func loadSchemaFile(t *testing.T) *jsonSchema {
	t.Helper()
	body, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var s jsonSchema
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("%s: %v", schemaFile, err)
	}
	return &s
}

func parseYAML(t *testing.T, body []byte) map[string]any {
	t.Helper()
	m, err := yaml.Parser().Unmarshal(body)
	if err != nil {
		t.Fatalf("parse YAML: %v", err)
	}
	return m
}

func TestConfigSchema_Example(t *testing.T) {
	t.Parallel()
	schema := loadSchemaFile(t)
	body, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const modeline = "# yaml-language-server: $schema=./config.schema.json\n"
	if !bytes.HasPrefix(body, []byte(modeline)) {
		t.Errorf("config.example.yaml must start with the editor modeline %q", modeline)
	}
	if problems := validateSchema(t, "", parseYAML(t, body), schema); len(problems) > 0 {
		t.Errorf("config.example.yaml does not match %s:\n%s", schemaFile, strings.Join(problems, "\n"))
	}
}

// TestConfigSchema_Rejects shows the schema and the validator catch what the
// loader rejects: an unknown key, wrong types, a value outside an enum, a
// missing required key.
func TestConfigSchema_Rejects(t *testing.T) {
	t.Parallel()
	schema := loadSchemaFile(t)
	bad := `
server: {port: "8000", bogus: 1}
scheduling: {policy: lifo}
vram: {devices: [{index: 0, colour: red}]}
models:
  llm:
    - {model_path: ./m.gguf, gpus: [0, x], config: {env: {A: 1}, parallel: 1.5}}
  diffusion:
    - {name: d, model_path: ./d, config: {cfg_scale: high, engine: sd-cli}}
`
	got := validateSchema(t, "", parseYAML(t, []byte(bad)), schema)
	want := []string{
		"server.port: expected integer",
		"server.bogus: unknown key",
		"scheduling.policy: must be one of",
		"vram.devices[0].colour: unknown key",
		"models.llm[0]: missing required key name",
		"models.llm[0].gpus[1]: expected integer",
		"models.llm[0].config.env.A: expected string",
		"models.llm[0].config.parallel: expected integer",
		"models.diffusion[0].config.cfg_scale: expected number",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// TestConfigSchema_EnumsMatchValidation checks schemaEnums against Validate:
// every listed value passes, and an unlisted one is refused, at that key.
func TestConfigSchema_EnumsMatchValidation(t *testing.T) {
	t.Parallel()
	for path, values := range schemaEnums {
		for _, v := range append(slices.Clone(values), "not-a-value") {
			cfg := Default()
			cfg.Models.LLM = []LLMModel{{Name: "l", ModelPath: "./l"}}
			cfg.Models.LLM[0].setDefaults()
			cfg.Models.Diffusion = []DiffusionModel{{Name: "d", ModelPath: "./d"}}
			cfg.Models.Diffusion[0].setDefaults()
			key := setByPath(t, &cfg, path, v)
			var hit []string
			for _, p := range cfg.Validate() {
				if strings.HasPrefix(p, key+":") {
					hit = append(hit, p)
				}
			}
			if v == "not-a-value" && len(hit) == 0 {
				t.Errorf("%s: %q is accepted by Validate but not in schemaEnums", key, v)
			}
			if v != "not-a-value" && len(hit) > 0 {
				t.Errorf("%s: %q is in schemaEnums but Validate says %q", key, v, hit)
			}
		}
	}
}

// setByPath sets the string key at path ("[]" meaning element 0) and returns
// the key path as Validate names it.
func setByPath(t *testing.T, cfg *Config, path, value string) string {
	t.Helper()
	v := reflect.ValueOf(cfg).Elem()
	key := ""
	for _, seg := range strings.Split(path, ".") {
		name, list := strings.CutSuffix(seg, "[]")
		i, ok := fieldIndex(v.Type(), name)
		if !ok {
			t.Fatalf("%s: no key %s", path, name)
		}
		v, key = v.Field(i), joinKey(key, name)
		if list {
			v, key = v.Index(0), joinIndex(key, 0)
		}
	}
	v.SetString(value)
	return key
}

// validateSchema checks value (as parsed from YAML) against s and returns a
// problem per mismatch, each starting with its key path.
func validateSchema(t *testing.T, path string, value any, s *jsonSchema) []string {
	t.Helper()
	where := path
	if where == "" {
		where = "(root)"
	}
	if !schemaTypeMatches(s.Type, value) {
		return []string{fmt.Sprintf("%s: expected %s, got %T", where, s.Type, value)}
	}
	var problems []string
	if len(s.Enum) > 0 && !slices.Contains(s.Enum, value) {
		problems = append(problems, fmt.Sprintf("%s: must be one of %v, got %v", where, s.Enum, value))
	}
	switch s.Type {
	case "array":
		for i, item := range value.([]any) {
			problems = append(problems, validateSchema(t, joinIndex(path, i), item, s.Items)...)
		}
	case "object":
		m, _ := asMap(value)
		problems = append(problems, validateObject(t, path, where, m, s)...)
	}
	return problems
}

func validateObject(t *testing.T, path, where string, m map[string]any, s *jsonSchema) []string {
	t.Helper()
	var problems []string
	for _, r := range s.Required {
		if _, ok := m[r]; !ok {
			problems = append(problems, fmt.Sprintf("%s: missing required key %s", where, r))
		}
	}
	var extra *jsonSchema
	closed := string(s.AdditionalProperties) == "false"
	if len(s.AdditionalProperties) > 0 && !closed {
		extra = new(jsonSchema)
		if err := json.Unmarshal(s.AdditionalProperties, extra); err != nil {
			t.Fatalf("%s: additionalProperties: %v", where, err)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		child := joinKey(path, k)
		switch prop, ok := s.Properties[k]; {
		case ok:
			problems = append(problems, validateSchema(t, child, m[k], prop)...)
		case extra != nil:
			problems = append(problems, validateSchema(t, child, m[k], extra)...)
		case closed:
			problems = append(problems, child+": unknown key")
		}
	}
	return problems
}

// schemaTypeMatches reports whether a YAML value has the JSON type typ.
// Integers may be written as whole floats (1e3), as JSON Schema allows.
func schemaTypeMatches(typ string, v any) bool {
	switch typ {
	case "":
		return true
	case "object":
		_, ok := asMap(v)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		switch n := v.(type) {
		case int, int64, uint64:
			return true
		case float64:
			return n == math.Trunc(n) && !math.IsInf(n, 0)
		}
	case "number":
		switch v.(type) {
		case int, int64, uint64, float64:
			return true
		}
	}
	return false
}
