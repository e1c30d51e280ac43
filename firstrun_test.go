package main

import (
	"bytes"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/cli"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		cmd  string
		rest []string
	}{
		{nil, "serve", nil},
		{[]string{"-config", "c.yaml"}, "serve", []string{"-config", "c.yaml"}},
		{[]string{"--url", "http://127.0.0.1:1", "ps"}, "ps", []string{"--url", "http://127.0.0.1:1"}},
		{[]string{"ps", "--url", "http://127.0.0.1:1"}, "ps", []string{"--url", "http://127.0.0.1:1"}},
		{[]string{"--url=http://h:1", "--json", "status", "ID"}, "status", []string{"--url=http://h:1", "--json", "ID"}},
		{[]string{"-config", "c.yaml", "check"}, "check", []string{"-config", "c.yaml"}},
		{[]string{"-config", "ps"}, "serve", []string{"-config", "ps"}}, // -config's value, whatever it is
		{[]string{"--timeout", "5s", "status", "ID"}, "status", []string{"--timeout", "5s", "ID"}},
		{[]string{"submit", "-m", "alpha", "hello"}, "submit", []string{"-m", "alpha", "hello"}},
		{[]string{"-h"}, "help", nil},
		{[]string{"--help"}, "help", nil},
		{[]string{"help", "submit"}, "help", []string{"submit"}},
		{[]string{"-v"}, "version", nil},
		{[]string{"--version"}, "version", nil},
		{[]string{"-config", "c.yaml", "--version"}, "version", nil},
		{[]string{"bogus"}, "bogus", []string{}},
		{[]string{"--", "ps"}, "serve", []string{"--", "ps"}},
	} {
		cmd, rest := splitCommand(tc.args)
		if cmd != tc.cmd || !slices.Equal(rest, tc.rest) {
			t.Errorf("splitCommand(%q) = %q %q, want %q %q", tc.args, cmd, rest, tc.cmd, tc.rest)
		}
	}
}

func TestConfigSearchPath(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"HOME": "/home/u"}, []string{"vramcram.yaml", "/home/u/.config/vramcram/config.yaml", "/etc/vramcram/config.yaml"}},
		{map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "/xdg"}, []string{"vramcram.yaml", "/xdg/vramcram/config.yaml", "/etc/vramcram/config.yaml"}},
		// The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
		{map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "rel"}, []string{"vramcram.yaml", "/home/u/.config/vramcram/config.yaml", "/etc/vramcram/config.yaml"}},
		{map[string]string{}, []string{"vramcram.yaml", "/etc/vramcram/config.yaml"}},
	} {
		got := configSearchPath(func(k string) string { return tc.env[k] })
		if !slices.Equal(got, tc.want) {
			t.Errorf("env %v: %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestFindConfig(t *testing.T) {
	paths := []string{"a", "b", "c"}
	for _, tc := range []struct {
		exist []string
		want  string
		ok    bool
	}{
		{[]string{"b", "c"}, "b", true},
		{[]string{"a", "c"}, "a", true},
		{[]string{"c"}, "c", true},
		{nil, "", false},
	} {
		got, ok := findConfig(paths, func(p string) bool { return slices.Contains(tc.exist, p) })
		if got != tc.want || ok != tc.ok {
			t.Errorf("exist %q: %q %v, want %q %v", tc.exist, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRun_HelpListsEveryCommand: -h, --help and help print every command on
// stdout and exit 0.
func TestRun_HelpListsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"-help"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || errb.Len() > 0 {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errb.String())
		}
		for _, name := range serverCommands {
			if !strings.Contains(out.String(), "vramcram "+name) && !strings.Contains(out.String(), "vramcram ["+name+"]") {
				t.Errorf("%q: %q missing from\n%s", args, name, out.String())
			}
		}
		for _, name := range cli.Names() {
			if !strings.Contains(out.String(), "vramcram "+name+" ") {
				t.Errorf("%q: %q missing from\n%s", args, name, out.String())
			}
		}
	}
	for _, args := range [][]string{{"serve", "-h"}, {"check", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-config") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "submit"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: vramcram submit") {
		t.Errorf("help submit: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

func TestRun_Version(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}, {"--url", "http://x:1", "-v"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errb.String())
		}
		lines := strings.Split(out.String(), "\n")
		if lines[0] != "vramcram "+version {
			t.Errorf("%q: first line %q, want %q", args, lines[0], "vramcram "+version)
		}
		for _, want := range []string{"commit:", runtime.Version(), "nvml:     built in"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%q: %q missing from\n%s", args, want, out.String())
			}
		}
	}
}

// TestBuildLogger_NoColor: tint writes ANSI colours unless NO_COLOR is set.
func TestBuildLogger_NoColor(t *testing.T) {
	for _, noColor := range []bool{false, true} {
		var b bytes.Buffer
		buildLogger("tint", "info", noColor, &b).Warn("hello", "err", "boom")
		if got := strings.Contains(b.String(), "\x1b["); got == noColor {
			t.Errorf("noColor=%v: escape codes present=%v in %q", noColor, got, b.String())
		}
		if !strings.Contains(b.String(), "hello") {
			t.Errorf("noColor=%v: %q", noColor, b.String())
		}
	}
	var b bytes.Buffer
	buildLogger("json", "info", true, &b).Info("hello")
	if !strings.HasPrefix(b.String(), `{"time":`) {
		t.Errorf("json format: %q", b.String())
	}
}
