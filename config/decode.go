package config

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

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
