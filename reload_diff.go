package main

import (
	"reflect"
	"slices"
	"strings"

	"github.com/vramcram/vramcram/config"
)

// configDiff is what a new config changes against the running one.
type configDiff struct {
	Added   []string `json:"added,omitempty"`   // models
	Removed []string `json:"removed,omitempty"` // models
	Changed []string `json:"changed,omitempty"` // models whose engine must restart
	// Keys are the changed keys outside models, by key path; Restart those
	// of them that take effect only when the daemon restarts.
	Keys    []string `json:"keys,omitempty"`
	Restart []string `json:"restart_needed,omitempty"`
}

// empty reports whether the new config changes nothing.
func (d configDiff) empty() bool {
	return len(d.Added)+len(d.Removed)+len(d.Changed)+len(d.Keys) == 0
}

// liveKeys are the key paths (or prefixes ending in ".") a reload applies
// without a restart; any other changed key needs one. inference.* restarts
// every model (its engine binary may have changed); agents.* applies to
// engines started after the reload.
var liveKeys = []string{
	"server.api_keys", "server.max_body_bytes", "server.max_prompt_chars", "server.cors_origins", "server.allowed_hosts",
	"vram.safety_margin_mb", "vram.monitoring_interval_seconds", "vram.release_timeout_seconds",
	"inference.", "agents.", "scheduling.",
}

// restartKeys are keys under a live prefix that still need a restart.
var restartKeys = []string{"scheduling.max_queue"}

func liveKey(k string) bool {
	if slices.Contains(restartKeys, k) {
		return false
	}
	for _, p := range liveKeys {
		if k == p || strings.HasSuffix(p, ".") && strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// diffConfigs compares a new config with the running one.
func diffConfigs(old, cur *config.Config) configDiff {
	var d configDiff
	changedKeys("", reflect.ValueOf(*old), reflect.ValueOf(*cur), &d.Keys)
	for _, k := range d.Keys {
		if !liveKey(k) {
			d.Restart = append(d.Restart, k)
		}
	}
	engineWide := slices.ContainsFunc(d.Keys, func(k string) bool { return strings.HasPrefix(k, "inference.") })
	was, now := modelEntries(old), modelEntries(cur)
	for _, name := range modelOrder(cur) {
		o, ok := was[name]
		switch {
		case !ok:
			d.Added = append(d.Added, name)
		case engineWide || !reflect.DeepEqual(o, now[name]):
			d.Changed = append(d.Changed, name)
		}
	}
	for _, name := range modelOrder(old) {
		if _, ok := now[name]; !ok {
			d.Removed = append(d.Removed, name)
		}
	}
	return d
}

// changedKeys appends the key paths (koanf names) of the leaves that differ
// between a and b; models are diffed apart.
func changedKeys(prefix string, a, b reflect.Value, out *[]string) {
	walkKeys(prefix, a, b, func(key string, fa, fb reflect.Value) {
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, key)
		}
	})
}

// walkKeys calls fn with the key path (koanf names) and the two values of
// every leaf of a and b, structs walked field by field, models left out.
func walkKeys(prefix string, a, b reflect.Value, fn func(key string, fa, fb reflect.Value)) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		key := prefix + name
		if key == "models" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			walkKeys(key+".", a.Field(i), b.Field(i), fn)
			continue
		}
		fn(key, a.Field(i), b.Field(i))
	}
}

// modelEntries maps each model's name to what decides its engine: its
// entry with the keys that apply live (aliases, pinned, preload, ttl)
// cleared, tagged with its kind.
func modelEntries(c *config.Config) map[string]any {
	out := map[string]any{}
	for _, m := range c.Models.LLM {
		m.Aliases, m.Pinned, m.Preload, m.TTLSeconds = nil, false, false, 0
		out[m.Name] = m
	}
	for _, m := range c.Models.Diffusion {
		m.Aliases, m.Pinned, m.Preload, m.TTLSeconds = nil, false, false, 0
		out[m.Name] = m
	}
	return out
}

func modelOrder(c *config.Config) []string {
	var out []string
	for _, m := range c.Models.LLM {
		out = append(out, m.Name)
	}
	for _, m := range c.Models.Diffusion {
		out = append(out, m.Name)
	}
	return out
}

// keepRestartKeys sets every key of next that takes effect only after a
// restart back to its value in boot (what the daemon runs with), so that a
// reload applies the live keys alone: a changed server.host must not turn
// the Host guard off while the listener stays where it is, and a changed
// storage.data_dir must not move images away from their retention.
func keepRestartKeys(prefix string, next, boot reflect.Value) {
	walkKeys(prefix, next, boot, func(key string, fn, fb reflect.Value) {
		if !liveKey(key) {
			fn.Set(fb)
		}
	})
}
