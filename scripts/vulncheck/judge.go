package main

import (
	"cmp"
	"fmt"
	"slices"
)

// verdict is the outcome of comparing a scan with the allowlist.
type verdict struct {
	Failures []string // each fails the run
	Allowed  []string // reachable, accepted by an entry whose check holds
	Info     []string // imported or required but not called: printed only
}

// judge fails every reachable (symbol-level) vulnerability that no entry
// accepts, every entry whose check does not hold, and every entry that
// matches no reachable vulnerability (so the list only shrinks by review,
// never by silence). Module- and package-level findings are informational:
// govulncheck itself does not count them, since no code of ours calls the
// vulnerable symbols.
func judge(s *scan, allow []allowEntry, g graph, root string) verdict {
	var v verdict
	accepted := map[string]allowEntry{}
	for _, e := range allow {
		if why := e.Check.failure(g); why != "" {
			v.Failures = append(v.Failures, fmt.Sprintf("%s: allowlist line %d: check %q does not hold: %s", e.ID, e.Line, e.Check, why))
			continue
		}
		accepted[e.ID] = e
	}
	for _, x := range sortedVulns(s) {
		where := x.Module + "@" + x.Version
		fix := "no fixed version"
		if x.Fixed != "" {
			fix = "fixed in " + x.Fixed
		}
		if x.Level != levelSymbol {
			v.Info = append(v.Info, fmt.Sprintf("%s %s (%s; %s): %s", x.ID, where, x.Level, fix, x.Summary))
			continue
		}
		if e, ok := accepted[x.ID]; ok {
			v.Allowed = append(v.Allowed, fmt.Sprintf("%s %s (%s): %s\n    reason: %s\n    check holds: %s", x.ID, where, fix, x.Summary, e.Reason, e.Check))
			continue
		}
		if slices.ContainsFunc(allow, func(e allowEntry) bool { return e.ID == x.ID }) {
			continue // already failed above: its check does not hold
		}
		v.Failures = append(v.Failures, fmt.Sprintf("%s %s (%s): %s\n    %s", x.ID, where, fix, x.Summary, traceString(x.Trace, root)))
	}
	for _, e := range allow {
		if x := s.Vulns[e.ID]; x == nil || x.Level != levelSymbol {
			v.Failures = append(v.Failures, fmt.Sprintf("%s: allowlist line %d matches no reachable vulnerability: remove the entry", e.ID, e.Line))
		}
	}
	return v
}

func sortedVulns(s *scan) []*vuln {
	out := make([]*vuln, 0, len(s.Vulns))
	for _, x := range s.Vulns {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b *vuln) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
