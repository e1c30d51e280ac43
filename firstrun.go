package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vramcram/vramcram/cli"
)

// Command-line dispatch and config discovery: what a first run meets.

// serverCommands are the commands besides the client ones.
var serverCommands = []string{"serve", "check", "version", "help"}

func isCommand(name string) bool {
	return slices.Contains(serverCommands, name) || cli.Has(name)
}

// Flags that may come before the command. valueFlags take the next
// argument as their value unless written -flag=value; boolFlags never do.
// Any other flag may or may not: a following command name is taken as the
// command, anything else as the flag's value.
var (
	valueFlags = []string{"config", "url"}
	boolFlags  = []string{"json", "h", "help", "v", "version"}
)

// splitCommand finds the command in args and returns it with the other
// arguments, flags given before the command first, so that global flags
// work before or after it ("--url URL ps" is "ps --url URL"). With no
// command, -h/--help means help, -v/--version means version, and anything
// else serve (the flags are serve's).
func splitCommand(args []string) (string, []string) {
	maybeValue := false // the previous argument was a flag that may take a value
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
			switch {
			case inline || slices.Contains(boolFlags, name):
				maybeValue = false
			case slices.Contains(valueFlags, name):
				i++ // its value, whatever it is
				maybeValue = false
			default:
				maybeValue = true
			}
			continue
		}
		if isCommand(a) || !maybeValue {
			rest := append(slices.Clip(args[:i]), args[i+1:]...)
			return a, rest
		}
		maybeValue = false
	}
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return "help", nil
		case "-v", "-version", "--version":
			return "version", nil
		}
	}
	return "serve", args
}

// configSearchPath lists where a config file is looked for when neither
// -config nor VRAMCRAM_CONFIG names one, first match wins:
// ./vramcram.yaml, $XDG_CONFIG_HOME/vramcram/config.yaml (XDG_CONFIG_HOME
// defaults to ~/.config and must be absolute), /etc/vramcram/config.yaml.
func configSearchPath(getenv func(string) string) []string {
	paths := []string{"vramcram.yaml"}
	xdg := getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(xdg) {
		xdg = ""
		if home := getenv("HOME"); home != "" {
			xdg = filepath.Join(home, ".config")
		}
	}
	if xdg != "" {
		paths = append(paths, filepath.Join(xdg, "vramcram", "config.yaml"))
	}
	return append(paths, "/etc/vramcram/config.yaml")
}

// findConfig returns the first of paths that exists.
func findConfig(paths []string, exists func(string) bool) (string, bool) {
	for _, p := range paths {
		if exists(p) {
			return p, true
		}
	}
	return "", false
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

// noConfigHelp tells a user who ran vramcram without a config how to start.
func noConfigHelp(w io.Writer, searched []string) {
	fmt.Fprintln(w, "vramcram: no config file. Looked for (first found wins):")
	for _, p := range searched {
		if !filepath.IsAbs(p) {
			p = "./" + p
		}
		fmt.Fprintf(w, "  %s\n", p)
	}
	fmt.Fprint(w, `
To start:
  make demo                            in the source tree: a daemon on http://127.0.0.1:8000
                                       with stand-in engines (no GPU or model files needed)
  vramcram -config FILE                run with your config (or set VRAMCRAM_CONFIG=FILE)
  cp config.example.yaml vramcram.yaml start from the example (every key explained),
                                       then set your models and engine paths
  vramcram check -config FILE          see what each model will reserve and whether it fits
  vramcram help                        every command
`)
}
