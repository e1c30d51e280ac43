// Command vulncheck judges govulncheck's JSON output against the reviewed
// allowlist (allow.txt beside this file). make vulncheck runs it through
// scripts/vulncheck/run.sh, which builds the tools and the database.
//
//	govulncheck -format json ./... | go run ./scripts/vulncheck -allow scripts/vulncheck/allow.txt ./...
//
// It exits 1 when a reachable vulnerability is not allowed, when an allowed
// one's check does not hold, or when an entry matches nothing; it prints the
// database's date so a stale one shows. The package patterns after the flags
// (default ./...) are the ones govulncheck scanned: the checks run go list
// -deps on them.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// staleAfter is the database age past which the report warns.
const staleAfter = 30 * 24 * time.Hour

func main() {
	allowPath := flag.String("allow", "scripts/vulncheck/allow.txt", "allowlist file")
	in := flag.String("in", "-", "govulncheck -format json output (- for stdin)")
	dbName := flag.String("db-name", "", "name of the database, for the report (e.g. golang.org/x/vulndb@VERSION)")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	if err := run(os.Stdout, *allowPath, *in, *dbName, patterns); err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, allowPath, in, dbName string, patterns []string) error {
	s, err := readScanFile(in)
	if err != nil {
		return err
	}
	f, err := os.Open(allowPath)
	if err != nil {
		return fmt.Errorf("open allowlist: %w", err)
	}
	defer f.Close()
	allow, err := parseAllowlist(f, allowPath)
	if err != nil {
		return err
	}
	g, err := listDeps(patterns)
	if err != nil {
		return err
	}
	root, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	printHeader(w, s.Config, dbName, time.Now())
	v := judge(s, allow, g, root)
	printSection(w, "informational (not reachable from our code)", v.Info)
	printSection(w, "allowed (reviewed in "+allowPath+")", v.Allowed)
	printSection(w, "FAIL", v.Failures)
	if len(v.Failures) > 0 {
		return fmt.Errorf("%d problem(s) listed under FAIL; docs/dependencies.md says how to handle an advisory", len(v.Failures))
	}
	fmt.Fprintf(w, "vulncheck ok: %d reachable vulnerabilities, all allowed; %d informational\n", len(v.Allowed), len(v.Info))
	return nil
}

func readScanFile(in string) (*scan, error) {
	if in == "-" {
		return readScan(bufio.NewReader(os.Stdin))
	}
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("open govulncheck output: %w", err)
	}
	defer f.Close()
	return readScan(bufio.NewReader(f))
}

// listDeps runs go list -deps on patterns and returns the import graph.
func listDeps(patterns []string) (graph, error) {
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, patterns...)
	var stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w: %s", strings.Join(patterns, " "), err, strings.TrimSpace(stderr.String()))
	}
	return parseDeps(out), nil
}

func parseDeps(out []byte) graph {
	g := graph{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		g[fields[0]] = fields[1:]
	}
	return g
}

func printHeader(w io.Writer, c scanConfig, dbName string, now time.Time) {
	fmt.Fprintf(w, "govulncheck %s, %s, scan level %s\n", c.ScannerVersion, c.GoVersion, c.ScanLevel)
	name := c.DB
	if dbName != "" {
		name = dbName + " (" + c.DB + ")"
	}
	if c.DBLastModified == nil || c.DBLastModified.IsZero() {
		fmt.Fprintf(w, "database %s: WARNING: no date, its age is unknown\n", name)
		return
	}
	age := now.Sub(*c.DBLastModified)
	fmt.Fprintf(w, "database %s: last modified %s (%d days ago)\n", name, c.DBLastModified.UTC().Format(time.DateOnly), int(age.Hours()/24))
	if age > staleAfter {
		fmt.Fprintf(w, "WARNING: the database is older than %d days: run make vulncheck VULNDB_VERSION=latest and pin the version it reports\n", int(staleAfter.Hours()/24))
	}
}

func printSection(w io.Writer, title string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "%s:\n", title)
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
}
