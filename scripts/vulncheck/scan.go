package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
)

// message is one value of govulncheck's -format json stream (protocol
// v1.0.0). Only the fields this program reads are declared.
type message struct {
	Config  *scanConfig `json:"config"`
	OSV     *osvEntry   `json:"osv"`
	Finding *finding    `json:"finding"`
}

type scanConfig struct {
	ScannerVersion string     `json:"scanner_version"`
	DB             string     `json:"db"`
	DBLastModified *time.Time `json:"db_last_modified"`
	GoVersion      string     `json:"go_version"`
	ScanLevel      string     `json:"scan_level"`
}

type osvEntry struct {
	ID      string `json:"id"`
	Summary string `json:"summary"`
}

// finding is one govulncheck finding. Trace[0] is the vulnerable module,
// package or symbol; at symbol level the rest of the trace walks back to
// the caller in our code.
type finding struct {
	OSV          string  `json:"osv"`
	FixedVersion string  `json:"fixed_version"`
	Trace        []frame `json:"trace"`
}

type frame struct {
	Module   string    `json:"module"`
	Version  string    `json:"version"`
	Package  string    `json:"package"`
	Function string    `json:"function"`
	Receiver string    `json:"receiver"`
	Position *position `json:"position"`
}

type position struct {
	Filename string `json:"filename"`
	Line     int    `json:"line"`
	Column   int    `json:"column"`
}

// level is how close a vulnerability comes to our code, as govulncheck
// grades it: a required module, an imported package, or a called symbol.
type level int

const (
	levelModule  level = iota + 1 // the module is required, no vulnerable package imported
	levelPackage                  // a vulnerable package is imported, no vulnerable symbol called
	levelSymbol                   // our code reaches a vulnerable symbol
)

func (l level) String() string {
	switch l {
	case levelModule:
		return "required, not imported"
	case levelPackage:
		return "imported, not called"
	case levelSymbol:
		return "called"
	}
	return fmt.Sprintf("level(%d)", int(l))
}

func (f *finding) level() level {
	if len(f.Trace) == 0 {
		return levelModule
	}
	switch top := f.Trace[0]; {
	case top.Function != "":
		return levelSymbol
	case top.Package != "":
		return levelPackage
	}
	return levelModule
}

// vuln is everything the scan said about one OSV entry, at its deepest level.
type vuln struct {
	ID      string
	Summary string
	Module  string
	Version string
	Fixed   string // "" when no fixed version exists
	Level   level
	Trace   []frame // the first symbol-level trace, for the report
}

// scan is a whole govulncheck run.
type scan struct {
	Config scanConfig
	Vulns  map[string]*vuln // by OSV id
}

// readScan decodes a govulncheck -format json stream.
func readScan(r io.Reader) (*scan, error) {
	s := &scan{Vulns: map[string]*vuln{}}
	summaries := map[string]string{}
	dec := json.NewDecoder(r)
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("decode govulncheck output: %w", err)
		}
		switch {
		case m.Config != nil:
			s.Config = *m.Config
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil:
			if err := s.add(m.Finding); err != nil {
				return nil, err
			}
		}
	}
	if s.Config.ScannerVersion == "" {
		return nil, errors.New("decode govulncheck output: no config message (is this govulncheck -format json?)")
	}
	for id, v := range s.Vulns {
		v.Summary = summaries[id]
	}
	return s, nil
}

func (s *scan) add(f *finding) error {
	if f.OSV == "" || len(f.Trace) == 0 {
		return fmt.Errorf("decode govulncheck output: finding without osv id or trace: %+v", *f)
	}
	v := s.Vulns[f.OSV]
	if v == nil {
		v = &vuln{ID: f.OSV, Module: f.Trace[0].Module, Version: f.Trace[0].Version, Fixed: f.FixedVersion}
		s.Vulns[f.OSV] = v
	}
	if l := f.level(); l > v.Level {
		v.Level = l
		if l == levelSymbol {
			v.Trace = f.Trace
		}
	}
	return nil
}

// traceString renders a symbol-level trace from our code down to the
// vulnerable symbol: "api/server.go:122:7: api.New → echo.Echo.GET", with
// file names relative to root.
func traceString(t []frame, root string) string {
	var names []string
	where := ""
	for i := len(t) - 1; i >= 0; i-- {
		names = append(names, t[i].name())
		if where == "" && t[i].Position != nil && t[i].Position.Filename != "" {
			file := t[i].Position.Filename
			if rel, err := filepath.Rel(root, file); err == nil && !strings.HasPrefix(rel, "..") {
				file = rel
			}
			where = fmt.Sprintf("%s:%d:%d: ", file, t[i].Position.Line, t[i].Position.Column)
		}
	}
	return where + strings.Join(names, " → ")
}

func (f frame) name() string {
	pkg := f.Package
	if i := strings.LastIndex(pkg, "/"); i >= 0 {
		pkg = pkg[i+1:]
	}
	if f.Receiver != "" {
		return pkg + "." + strings.TrimPrefix(f.Receiver, "*") + "." + f.Function
	}
	return pkg + "." + f.Function
}
