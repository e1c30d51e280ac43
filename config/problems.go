package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/vramcram/vramcram/engine/command"
)

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
