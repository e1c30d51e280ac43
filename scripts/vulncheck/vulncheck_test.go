package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// stream is a govulncheck -format json run in miniature: one advisory
// reached from our code (with its module- and package-level findings too),
// one only imported, one only required.
const stream = `{"config":{"protocol_version":"v1.0.0","scanner_name":"govulncheck","scanner_version":"v1.10.0","db":"file:///db","db_last_modified":"2026-11-05T23:49:57Z","go_version":"go1.27.3","scan_level":"symbol","scan_mode":"source"}}
{"progress":{"message":"Scanning your code..."}}
{"osv":{"id":"GO-2026-6617","summary":"HTTP/2 server crash"}}
{"osv":{"id":"GO-2026-6303","summary":"ssh source-address"}}
{"osv":{"id":"GO-2026-6629","summary":"precis panic"}}
{"finding":{"osv":"GO-2026-6617","fixed_version":"v0.60.0","trace":[{"module":"golang.org/x/net","version":"v0.56.0"}]}}
{"finding":{"osv":"GO-2026-6617","fixed_version":"v0.60.0","trace":[{"module":"golang.org/x/net","version":"v0.56.0","package":"golang.org/x/net/http2"}]}}
{"finding":{"osv":"GO-2026-6617","fixed_version":"v0.60.0","trace":[{"module":"golang.org/x/net","version":"v0.56.0","package":"golang.org/x/net/http2","function":"RoundTrip","receiver":"*Transport"},{"module":"github.com/vramcram/vramcram","package":"github.com/vramcram/vramcram/runner","function":"GenerateImages","receiver":"*Process","position":{"filename":"/repo/runner/sdserver.go","line":147,"column":26}}]}}
{"finding":{"osv":"GO-2026-6303","fixed_version":"v0.55.0","trace":[{"module":"golang.org/x/crypto","version":"v0.53.0","package":"golang.org/x/crypto/ssh"}]}}
{"finding":{"osv":"GO-2026-6629","fixed_version":"v0.41.0","trace":[{"module":"golang.org/x/text","version":"v0.40.0"}]}}
`

func mustScan(t *testing.T, in string) *scan {
	t.Helper()
	s, err := readScan(strings.NewReader(in))
	if err != nil {
		t.Fatalf("readScan: %v", err)
	}
	return s
}

func TestReadScan(t *testing.T) {
	s := mustScan(t, stream)
	if s.Config.ScannerVersion != "v1.10.0" || s.Config.DBLastModified == nil || s.Config.DBLastModified.Year() != 2026 {
		t.Fatalf("config = %+v", s.Config)
	}
	want := map[string]level{"GO-2026-6617": levelSymbol, "GO-2026-6303": levelPackage, "GO-2026-6629": levelModule}
	for id, l := range want {
		v := s.Vulns[id]
		if v == nil || v.Level != l {
			t.Errorf("%s: got %+v, want level %s", id, v, l)
		}
	}
	v := s.Vulns["GO-2026-6617"]
	if v.Summary != "HTTP/2 server crash" || v.Fixed != "v0.60.0" || v.Module != "golang.org/x/net" || v.Version != "v0.56.0" {
		t.Errorf("GO-2026-6617 = %+v", v)
	}
	if got, want := traceString(v.Trace, "/repo"), "runner/sdserver.go:147:26: runner.Process.GenerateImages → http2.Transport.RoundTrip"; got != want {
		t.Errorf("trace = %q, want %q", got, want)
	}
}

func TestReadScan_Rejects(t *testing.T) {
	for name, in := range map[string]string{
		"NotJSON":        "govulncheck: loading packages: errors\n",
		"NoConfig":       `{"progress":{"message":"x"}}`,
		"FindingNoTrace": `{"config":{"scanner_version":"v1"}}{"finding":{"osv":"GO-2026-0001"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := readScan(strings.NewReader(in)); err == nil {
				t.Fatal("readScan accepted it")
			}
		})
	}
}

func TestJudge(t *testing.T) {
	clean := graph{"github.com/vramcram/vramcram/api": {"github.com/labstack/echo/v4"}, "github.com/labstack/echo/v4": nil}
	withMiddleware := graph{
		"github.com/vramcram/vramcram/api":                 {"github.com/labstack/echo/v4", "github.com/labstack/echo/v4/middleware"},
		"github.com/labstack/echo/v4":                      nil,
		"github.com/labstack/echo/v4/middleware":           nil,
		"github.com/labstack/echo/v4/middleware/internal1": nil,
	}
	allowNet := allowEntry{ID: "GO-2026-6617", Check: check{checkNoImport, "github.com/labstack/echo/v4/middleware/..."}, Reason: "r", Line: 3}
	allowOther := allowEntry{ID: "GO-2026-9999", Check: check{checkNoImport, "example.com/x"}, Reason: "r", Line: 4}
	allowImported := allowEntry{ID: "GO-2026-6303", Check: check{checkNoImport, "example.com/x"}, Reason: "r", Line: 5}
	tests := []struct {
		name         string
		allow        []allowEntry
		g            graph
		failContains []string // one failure per element, in order
		allowed      int
	}{
		{name: "ReachableNotAllowedFails", g: clean, failContains: []string{"GO-2026-6617 golang.org/x/net@v0.56.0 (fixed in v0.60.0)"}},
		{name: "AllowedWhileCheckHolds", allow: []allowEntry{allowNet}, g: clean, allowed: 1},
		{name: "CheckBrokenByMiddlewareImport", allow: []allowEntry{allowNet}, g: withMiddleware,
			failContains: []string{"GO-2026-6617: allowlist line 3: check \"no-import github.com/labstack/echo/v4/middleware/...\" does not hold: linked: github.com/labstack/echo/v4/middleware (imported by github.com/vramcram/vramcram/api)"}},
		{name: "StaleEntryFails", allow: []allowEntry{allowNet, allowOther}, g: clean, allowed: 1,
			failContains: []string{"GO-2026-9999: allowlist line 4 matches no reachable vulnerability"}},
		{name: "EntryForUnreachableIsStale", allow: []allowEntry{allowNet, allowImported}, g: clean, allowed: 1,
			failContains: []string{"GO-2026-6303: allowlist line 5 matches no reachable vulnerability"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := judge(mustScan(t, stream), tt.allow, tt.g, "/repo")
			if len(v.Failures) != len(tt.failContains) {
				t.Fatalf("failures = %q, want %d", v.Failures, len(tt.failContains))
			}
			for i, want := range tt.failContains {
				if !strings.Contains(v.Failures[i], want) {
					t.Errorf("failure %d = %q, want it to contain %q", i, v.Failures[i], want)
				}
			}
			if len(v.Allowed) != tt.allowed {
				t.Errorf("allowed = %q, want %d", v.Allowed, tt.allowed)
			}
			// Findings below symbol level never fail the run.
			if len(v.Info) != 2 || !strings.Contains(v.Info[0], "GO-2026-6303") || !strings.Contains(v.Info[1], "GO-2026-6629") {
				t.Errorf("info = %q", v.Info)
			}
		})
	}
}

func TestParseAllowlist(t *testing.T) {
	good := "# comment\n\nGO-2026-6875 | no-import github.com/labstack/echo/v4/middleware/... | not linked\n"
	entries, err := parseAllowlist(strings.NewReader(good), "allow.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := allowEntry{ID: "GO-2026-6875", Check: check{checkNoImport, "github.com/labstack/echo/v4/middleware/..."}, Reason: "not linked", Line: 3}
	if len(entries) != 1 || entries[0] != want {
		t.Fatalf("entries = %+v, want %+v", entries, want)
	}
	for name, in := range map[string]string{
		"TwoFields":     "GO-2026-6875 | no-import x\n",
		"BadID":         "CVE-2026-1 | no-import x | r\n",
		"EmptyReason":   "GO-2026-6875 | no-import x |  \n",
		"UnknownCheck":  "GO-2026-6875 | trust-me x | r\n",
		"NoImportEmpty": "GO-2026-6875 | no-import | r\n",
		"NoImportTwo":   "GO-2026-6875 | no-import a b | r\n",
		"Duplicate":     "GO-2026-6875 | no-import x | r\nGO-2026-6875 | no-import y | r\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseAllowlist(strings.NewReader(in), "allow.txt"); err == nil || !strings.Contains(err.Error(), "allow.txt:") {
				t.Fatalf("err = %v, want an error naming the line", err)
			}
		})
	}
}

func TestMatchPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"a/b/...", "a/b", true},
		{"a/b/...", "a/b/c", true},
		{"a/b/...", "a/bc", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
	} {
		if got := matchPattern(tt.pattern, tt.pkg); got != tt.want {
			t.Errorf("matchPattern(%q, %q) = %v", tt.pattern, tt.pkg, got)
		}
	}
}

// TestAllowlist_ChecksHoldInRepo runs the reviewed allowlist's checks on
// this repository's real build graph, so go test fails, even without the
// vulnerability database, when someone imports an echo middleware package.
func TestAllowlist_ChecksHoldInRepo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list -deps on the whole module")
	}
	f, err := os.Open("allow.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := parseAllowlist(f, "allow.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"GO-2026-6875", "GO-2026-6872"} {
		i := slices.IndexFunc(entries, func(e allowEntry) bool { return e.ID == id })
		if i < 0 || entries[i].Check != (check{checkNoImport, "github.com/labstack/echo/v4/middleware/..."}) {
			t.Errorf("%s: want an entry whose check is no-import github.com/labstack/echo/v4/middleware/...", id)
		}
	}
	g, err := listDeps([]string{"github.com/vramcram/vramcram/..."})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g["github.com/labstack/echo/v4"]; !ok {
		t.Fatalf("go list -deps found no echo/v4 among %d packages: the graph is wrong", len(g))
	}
	for _, e := range entries {
		if why := e.Check.failure(g); why != "" {
			t.Errorf("%s (allow.txt:%d): check %q does not hold: %s", e.ID, e.Line, e.Check, why)
		}
	}
}

// TestEcho_OnlyInAPI keeps the echo v4 exit plan cheap (docs/dependencies.md):
// only packages under api/ import echo, so moving to echo v5 or to net/http's
// router is a change to one package.
func TestEcho_OnlyInAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list -deps on the whole module")
	}
	g, err := listDeps([]string{"github.com/vramcram/vramcram/..."})
	if err != nil {
		t.Fatal(err)
	}
	users := 0
	for pkg, imports := range g {
		if !slices.ContainsFunc(imports, func(p string) bool { return matchPattern("github.com/labstack/echo/v4/...", p) }) {
			continue
		}
		if matchPattern("github.com/labstack/echo/v4/...", pkg) {
			continue
		}
		users++
		if !matchPattern("github.com/vramcram/vramcram/api/...", pkg) {
			t.Errorf("%s imports echo: keep echo inside api/", pkg)
		}
	}
	if users == 0 {
		t.Fatal("no package imports echo: the import graph is wrong")
	}
}
