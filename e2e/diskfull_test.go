package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes on dir (created), or skips the test
// when mounting is not permitted (not root, no CAP_SYS_ADMIN). The unmount
// is registered first, so it runs after every later cleanup (the daemon's).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("a real full disk needs a tmpfs mount: not root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("a real full disk needs a tmpfs mount, not permitted here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Small writes may still find room in the last partial block.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return path
}

// TestE2E_FullDiskLosesNoResult runs the daemon with its data directory on
// a small tmpfs, fills it while jobs run, and frees it again: while full,
// /health is degraded with the reason and a submit answers 507
// storage_full; once there is room, every job completes with its result
// stored.
func TestE2E_FullDiskLosesNoResult(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine, "--test-token-delay", "40ms")
	data := filepath.Join(s.dir, "data")
	mountTmpfs(t, data, 8<<20)
	d := startDaemon(t, bin, s.cfg, s.port)

	// Results echo the prompt: 90 words of 1000 characters make each
	// result about 90 KB, which the store cannot take on a full disk.
	prompt := func(k int) string {
		words := make([]string, 90)
		for w := range words {
			words[w] = strings.Repeat(string(rune('a'+(k+w)%26)), 1000)
		}
		return fmt.Sprintf("job%d %s", k, strings.Join(words, " "))
	}
	ids := map[string]string{}
	for k := range 4 {
		p := prompt(k)
		ids[d.submit([]string{"alpha", "beta"}[k%2], p)] = p
	}
	// Fill the disk once every job runs (the engines are up, their records
	// written): the jobs finish on a full disk.
	pollUntil(t, "every job running", 60*time.Second, func() bool {
		for id := range ids {
			var js jobStatus
			d.do("GET", "/jobs/"+id, nil, &js)
			if js.Status != "running" {
				return false
			}
		}
		return true
	})
	filler := fillDisk(t, data)

	var h struct {
		Status     string `json:"status"`
		Reason     string `json:"reason"`
		Running    int    `json:"running"`
		HeldWrites int    `json:"held_writes"`
	}
	pollUntil(t, "/health degraded", 60*time.Second, func() bool {
		d.do("GET", "/health", nil, &h)
		return h.Status == "degraded" && strings.Contains(h.Reason, "no space left")
	})
	t.Logf("health while full: %+v", h)
	// bbolt may still hold free pages that take a submit or two (the jobs
	// accepted so are durable and must complete too); the disk itself has
	// no room, so a few submits must reach it and get 507.
	var errBody struct {
		JobID string                         `json:"job_id"`
		Error struct{ Code, Message string } `json:"error"`
	}
	refused := false
	for k := 9; k < 29 && !refused; k++ {
		errBody.JobID, errBody.Error.Code = "", ""
		code := d.do("POST", "/jobs", map[string]any{"model": "alpha", "prompt": prompt(k)}, &errBody)
		switch {
		case code == http.StatusInsufficientStorage && errBody.Error.Code == "storage_full":
			refused = true
		case code == http.StatusAccepted && errBody.JobID != "":
			ids[errBody.JobID] = prompt(k)
		default:
			t.Fatalf("submit on a full disk: %d %+v, want 507 storage_full", code, errBody)
		}
	}
	if !refused {
		t.Errorf("20 submits on a full disk were all accepted, want 507 storage_full")
	}
	for id := range ids {
		var js jobStatus
		d.do("GET", "/jobs/"+id, nil, &js)
		if js.Status == "failed" || js.Status == "cancelled" {
			t.Fatalf("job %s %s on a full disk: %+v", id, js.Status, js)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for id, p := range ids {
		js := d.waitJob(id, 60*time.Second)
		if js.Status != "completed" {
			t.Fatalf("job %s after the disk has room: %+v", id, js)
		}
		if got := d.resultText(id); got != strings.Join(strings.Fields("echo: "+p), " ") {
			t.Fatalf("job %s: result of %d bytes differs from its prompt's echo", id, len(got))
		}
	}
	pollUntil(t, "/health healthy", 30*time.Second, func() bool {
		d.do("GET", "/health", nil, &h)
		return h.Status == "healthy" && h.HeldWrites == 0
	})
	if !strings.Contains(d.logs.String(), "held job outcome stored") {
		t.Error("the log does not say that held outcomes were stored")
	}
}

// pollUntil polls cond until it holds or timeout passes.
func pollUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
