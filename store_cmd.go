package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/vramcram/vramcram/store"
)

// storeLockTimeout bounds the wait for the store file's lock: a running
// daemon holds it, and these commands must not touch the file meanwhile.
const storeLockTimeout = 2 * time.Second

// storeCmd runs "vramcram store check|recover -config FILE": offline
// commands on the store file under storage.data_dir. Exit 0 when the file
// is sound (check) or was salvaged (recover), 1 otherwise, 2 for usage.
func storeCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "recover") {
		fmt.Fprint(stderr, `usage:
  vramcram store check [-config FILE]     report damage in the store file (the daemon must be stopped)
  vramcram store recover [-config FILE]   copy every readable job into a fresh store file;
                                          the damaged one is kept as vramcram.db.damaged-TIME
`)
		return 2
	}
	sub := args[0]
	cfg, code := configFromFlags("store "+sub, args[1:], stderr)
	if cfg == nil {
		return code
	}
	path := filepath.Join(cfg.Storage.DataDir, storeFile)
	if sub == "check" {
		return storeCheck(path, stdout, stderr)
	}
	return storeRecover(path, stdout, stderr)
}

func storeCheck(path string, stdout, stderr io.Writer) int {
	rep, err := store.CheckFile(path, storeLockTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "vramcram store check:", err)
		return 1
	}
	fmt.Fprintf(stdout, "store %s (schema %d): %s\n", path, rep.Schema, stateCounts(rep.Jobs))
	if len(rep.Problems) == 0 {
		fmt.Fprintln(stdout, "no damage found")
		return 0
	}
	fmt.Fprintf(stdout, "DAMAGED: %d problem(s):\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "  -", p)
	}
	fmt.Fprintln(stdout, `run "vramcram store recover" (same -config) to copy every readable job into a fresh file`)
	return 1
}

func storeRecover(path string, stdout, stderr io.Writer) int {
	rep, err := store.Salvage(path, time.Now(), storeLockTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "vramcram store recover:", err)
		return 1
	}
	fmt.Fprintf(stdout, "recovered into %s: %s, %d results\n", rep.Path, stateCounts(rep.Jobs), rep.Results)
	fmt.Fprintf(stdout, "damaged file kept as %s\n", rep.Damaged)
	if rep.FromPageScan > 0 {
		fmt.Fprintf(stdout, "%d job(s) were found by scanning pages bbolt could not reach; a job may show an older state than its last\n", rep.FromPageScan)
	}
	if len(rep.ResultsLost) > 0 {
		fmt.Fprintf(stdout, "%d completed job(s) lost their result and are now failed: %s\n", len(rep.ResultsLost), strings.Join(rep.ResultsLost, " "))
	}
	if rep.Batches+rep.Files > 0 {
		fmt.Fprintf(stdout, "%d batch(es) and %d file record(s) copied\n", rep.Batches, rep.Files)
	}
	if rep.Skipped > 0 {
		fmt.Fprintf(stdout, "%d job record(s) could not be decoded and were left behind\n", rep.Skipped)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "unreadable:", p)
	}
	return 0
}

// stateCounts renders jobs per state in lifecycle order: "3 queued, 1 failed".
func stateCounts(m map[store.JobState]int) string {
	var parts []string
	for _, s := range store.JobStates() {
		if n := m[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(parts) == 0 {
		return "no jobs"
	}
	return strings.Join(parts, ", ")
}
