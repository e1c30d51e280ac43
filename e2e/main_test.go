// Package e2e holds VramCram's end-to-end tests and benchmarks: each builds
// the real binary and the stand-in engine, starts daemons on loopback ports
// and talks to them over HTTP, through the CLI and through the official
// clients. They run from the repository root, where the scripts, docs and
// example configs they read are.
package e2e

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot change to the repository root:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
