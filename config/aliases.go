package config

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/vramcram/vramcram/engine/llamacpp"
)

// aliasName is what an alias must look like: a model name that may also
// hold ':' (Ollama clients name models "family:tag").
var aliasName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// validateAliases checks models.*[].aliases: each a valid name, unique
// across all names and aliases. seen maps the model names to the key path
// that declared them.
func validateAliases(p *problems, c *Config, seen map[string]string) {
	check := func(path string, aliases []string) {
		for k, a := range aliases {
			key := fmt.Sprintf("%s.aliases[%d]", path, k)
			switch {
			case !aliasName.MatchString(a):
				p.addf("%s: %q is not a valid alias (1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit)", key, a)
			case seen[a] != "":
				p.addf("%s: %q is already used by %s", key, a, seen[a])
			default:
				seen[a] = key
			}
		}
	}
	for i, m := range c.Models.LLM {
		check(joinIndex("models.llm", i), m.Aliases)
	}
	for i, m := range c.Models.Diffusion {
		check(joinIndex("models.diffusion", i), m.Aliases)
	}
}

// modelAliases maps every alias to its model's name.
func Aliases(c *Config) map[string]string {
	out := map[string]string{}
	for _, m := range c.Models.LLM {
		for _, a := range m.Aliases {
			out[a] = m.Name
		}
	}
	for _, m := range c.Models.Diffusion {
		for _, a := range m.Aliases {
			out[a] = m.Name
		}
	}
	return out
}

// servesRoute is the API's check of which llama-server routes a model's
// engine serves: llama-server serves them all; any other engine serves the
// OpenAI paths it lists (a command engine's config.routes), the diffusion
// engines none of llama-server's own.
func ServesRoute(cfg *Config, endpoints map[string][]string) func(model, path string) bool {
	llama := map[string]bool{}
	for _, m := range cfg.Models.LLM {
		llama[m.Name] = m.Config.Engine == "" || m.Config.Engine == llamacpp.Name
	}
	return func(model, path string) bool {
		return llama[model] || slices.Contains(endpoints[model], path)
	}
}
