package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/vramcram/vramcram/cli"
	"github.com/vramcram/vramcram/config"
)

// checkOpts are check's own flags.
type checkOpts struct {
	url string // compare with the config of the daemon there
}

func (o *checkOpts) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.url, "url", "",
		"also show what a reload of the running daemon at this address would change (GET /admin/config; API key from $"+cli.EnvAPIKey+")")
}

// printReloadDiff asks the daemon at rawURL for its running config and
// prints what applying cfg would change.
func printReloadDiff(ctx context.Context, cfg *config.Config, rawURL string, getenv func(string) string, w io.Writer) error {
	var running struct {
		Path   string         `json:"path"`
		Config *config.Config `json:"config"`
	}
	base, err := cli.RunningConfig(ctx, rawURL, getenv, &running)
	if err != nil {
		return err
	}
	if running.Config == nil {
		return fmt.Errorf("running config: the daemon at %s sent none", base)
	}
	next := *cfg
	next.Server.APIKeys = hashKeys(cfg.Server.APIKeys) // the daemon shows its keys hashed
	d := diffConfigs(running.Config, &next)
	fmt.Fprintf(w, "\nagainst the daemon at %s (config %s):\n", base, running.Path)
	if d.empty() {
		fmt.Fprintln(w, "  a reload changes nothing")
		return nil
	}
	line := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", what, strings.Join(names, ", "))
		}
	}
	line("models added", d.Added)
	line("models removed (queued jobs fail, running work finishes, then the engine stops)", d.Removed)
	line("models changed (drain, then restart with the new options on next use)", d.Changed)
	var live []string
	for _, k := range d.Keys {
		if liveKey(k) {
			live = append(live, k)
		}
	}
	line("keys applied at once", live)
	line("keys that need a restart of the daemon", d.Restart)
	return nil
}
