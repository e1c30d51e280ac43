package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Build identity, set by the release build with
// -ldflags "-X main.version=v1.2.3 -X main.commit=<sha>" (see Makefile).
var (
	version = "dev"
	commit  = "" // empty: read from the Go toolchain's VCS stamp, if any
)

// buildCommit returns the commit the binary was built from: the -ldflags
// value, else the revision go build stamped (with "-dirty" for a modified
// work tree), else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev + dirty
}

// nvmlSupport describes whether this binary can read GPU memory through NVML.
func nvmlSupport() string {
	if nvmlBuiltIn {
		return "built in (libnvidia-ml.so.1 is loaded at run time)"
	}
	return "not built in (nonvml build: VRAM comes from the config)"
}

// printVersion writes what `vramcram version` shows.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "vramcram %s\n", version)
	fmt.Fprintf(w, "  commit:   %s\n", buildCommit())
	fmt.Fprintf(w, "  go:       %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "  nvml:     %s\n", nvmlSupport())
}
