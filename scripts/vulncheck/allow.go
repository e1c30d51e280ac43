package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// allowEntry is one reviewed exception: a reachable vulnerability that is
// accepted while its check holds.
type allowEntry struct {
	ID     string
	Check  check
	Reason string
	Line   int
}

// checkKind names a condition that keeps an exception's reason true.
type checkKind string

// checkNoImport holds while no package matching Arg is in the build graph
// of the scanned packages. Arg is an import path, or a path ending in
// "/..." for that package and everything under it.
const checkNoImport checkKind = "no-import"

type check struct {
	Kind checkKind
	Arg  string
}

func (c check) String() string { return string(c.Kind) + " " + c.Arg }

var osvID = regexp.MustCompile(`^GO-\d{4}-\d{4,}$`)

// parseAllowlist reads the allowlist format: one entry a line,
//
//	GO-YYYY-NNNN | no-import PATTERN | reason
//
// Blank lines and lines starting with # are skipped. Every field is
// required and an id may appear once.
func parseAllowlist(r io.Reader, name string) ([]allowEntry, error) {
	var entries []allowEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseAllowLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if prev, dup := seen[e.ID]; dup {
			return nil, fmt.Errorf("%s:%d: %s already listed on line %d", name, n, e.ID, prev)
		}
		seen[e.ID] = n
		e.Line = n
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return entries, nil
}

func parseAllowLine(line string) (allowEntry, error) {
	fields := strings.SplitN(line, "|", 3)
	if len(fields) != 3 {
		return allowEntry{}, fmt.Errorf("want \"ID | check | reason\", got %q", line)
	}
	e := allowEntry{ID: strings.TrimSpace(fields[0]), Reason: strings.TrimSpace(fields[2])}
	if !osvID.MatchString(e.ID) {
		return allowEntry{}, fmt.Errorf("%q is not a Go vulnerability id (GO-YYYY-NNNN)", e.ID)
	}
	if e.Reason == "" {
		return allowEntry{}, fmt.Errorf("%s: reason is empty", e.ID)
	}
	kind, arg, _ := strings.Cut(strings.TrimSpace(fields[1]), " ")
	e.Check = check{Kind: checkKind(kind), Arg: strings.TrimSpace(arg)}
	switch e.Check.Kind {
	case checkNoImport:
		if e.Check.Arg == "" || strings.ContainsAny(e.Check.Arg, " \t") {
			return allowEntry{}, fmt.Errorf("%s: no-import wants one import path, got %q", e.ID, e.Check.Arg)
		}
	default:
		return allowEntry{}, fmt.Errorf("%s: unknown check %q (known: %s)", e.ID, kind, checkNoImport)
	}
	return e, nil
}

// graph maps each package in the build of the scanned patterns to the
// packages it imports (go list -deps).
type graph map[string][]string

// failure says why c does not hold in g, or returns "" when it holds.
func (c check) failure(g graph) string {
	switch c.Kind {
	case checkNoImport:
		var hits []string
		for pkg := range g {
			if !matchPattern(c.Arg, pkg) {
				continue
			}
			hits = append(hits, fmt.Sprintf("%s (imported by %s)", pkg, strings.Join(importers(g, pkg), ", ")))
		}
		if len(hits) == 0 {
			return ""
		}
		slices.Sort(hits)
		return "linked: " + strings.Join(hits, "; ")
	}
	return fmt.Sprintf("unknown check %q", c.Kind)
}

// matchPattern reports whether pkg matches pattern, where a trailing
// "/..." matches the path itself and every path below it.
func matchPattern(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func importers(g graph, pkg string) []string {
	var out []string
	for p, imports := range g {
		if slices.Contains(imports, pkg) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
