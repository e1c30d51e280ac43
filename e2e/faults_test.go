package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Engine faults end to end: each faulty model is configured with a stand-in
// flag; its jobs end in a clear error or a retry, its instance is cleaned up
// (no process left, ledger released), and a healthy model keeps serving
// throughout.

func TestE2E_EngineFaults(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 40000, "policy: batch, max_attempts: 2",
		schedModel{name: "good", mb: 2000, slots: 2},
		schedModel{name: "failload", mb: 2000, engine: []string{"--test-fail-load"}},
		schedModel{name: "crash", mb: 2000, engine: []string{"--test-crash-after", "2", "--test-token-delay", "5ms"}},
		schedModel{name: "hang", mb: 2000, engine: []string{"--test-hang-after", "1"}},
		schedModel{name: "slowready", mb: 2000, engine: []string{"--test-load-delay", "60s"}},
		schedModel{name: "stubborn", mb: 2000, engine: []string{"--test-ignore-sigterm"}},
		schedModel{name: "forker", mb: 2000, engine: []string{"--test-fork-grandchild"}},
		schedModel{name: "early-exit", mb: 2000, engine: []string{"--test-exit-after", "100ms", "--test-load-delay", "2s"}},
	)
	// A model whose file does not exist, and a file that is not a model.
	cfg, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	notModel := filepath.Join(s.dir, "notes.txt")
	if err := os.WriteFile(notModel, []byte("plain text"), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("    - name: nofile\n      model_path: %s\n      vram_mb: 2000\n", filepath.Join(s.dir, "missing.gguf"))
	cfg = append(cfg, extra...)
	cfg = []byte(strings.Replace(string(cfg), "worker_ready_timeout_seconds: 20", "worker_ready_timeout_seconds: 2", 1))
	cfg = []byte(strings.Replace(string(cfg), "heartbeat_timeout_seconds: 5", "heartbeat_timeout_seconds: 2", 1))
	if err := os.WriteFile(s.cfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, s.cfg, s.port)

	// The healthy model serves all along.
	stopGood := make(chan struct{})
	goodDone := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stopGood:
				goodDone <- nil
				return
			default:
			}
			id := d.submit("good", fmt.Sprintf("still here %d", n))
			if js := d.waitJob(id, 30*time.Second); js.Status != "completed" {
				goodDone <- fmt.Errorf("good job %d: %+v", n, js)
				return
			}
			n++
		}
	}()

	t.Run("model file missing", func(t *testing.T) {
		var e struct {
			Error struct{ Code, Message string }
		}
		code := d.do("POST", "/jobs", map[string]any{"model": "nofile", "prompt": "x"}, &e)
		if code != 503 || e.Error.Code != "model_unavailable" || !strings.Contains(e.Error.Message, "not found") {
			t.Fatalf("submit to a model without a file: %d %+v", code, e)
		}
	})
	t.Run("load fails", func(t *testing.T) {
		js := d.waitJob(d.submit("failload", "x"), 60*time.Second)
		if js.Status != "failed" || !strings.Contains(js.Error, "failed to load") {
			t.Fatalf("job: %+v, want failed with the load error", js)
		}
	})
	t.Run("exits during load", func(t *testing.T) {
		js := d.waitJob(d.submit("early-exit", "x"), 60*time.Second)
		if js.Status != "failed" || !strings.Contains(js.Error, "exit") {
			t.Fatalf("job: %+v, want failed naming the exit", js)
		}
	})
	t.Run("readiness deadline", func(t *testing.T) {
		js := d.waitJob(d.submit("slowready", "x"), 60*time.Second)
		if js.Status != "failed" || !strings.Contains(js.Error, "ready") {
			t.Fatalf("job: %+v, want failed on the readiness deadline", js)
		}
	})
	t.Run("crash mid-job is retried", func(t *testing.T) {
		first := d.waitJob(d.submit("crash", "one"), 30*time.Second)
		second := d.waitJob(d.submit("crash", words(20)), 60*time.Second)
		if first.Status != "completed" || second.Status != "completed" || second.Attempts != 2 {
			t.Fatalf("jobs: %+v %+v, want the second retried on a fresh engine", first, second)
		}
	})
	t.Run("hang is caught by the heartbeat", func(t *testing.T) {
		first := d.waitJob(d.submit("hang", "one"), 30*time.Second)
		second := d.waitJob(d.submit("hang", "two"), 60*time.Second)
		if first.Status != "completed" || second.Status != "completed" || second.Attempts != 2 {
			t.Fatalf("jobs: %+v %+v, want the second retried on a fresh engine", first, second)
		}
	})
	t.Run("ignores SIGTERM", func(t *testing.T) {
		if js := d.waitJob(d.submit("stubborn", "x"), 30*time.Second); js.Status != "completed" {
			t.Fatalf("job: %+v", js)
		}
		pid := int(d.modelState("stubborn")["pid"].(float64))
		if code := d.do("POST", "/models/stubborn/unload", nil, nil); code >= 300 {
			t.Fatalf("unload: %d", code)
		}
		d.waitModel("stubborn", "unloaded", 20*time.Second)
		if _, alive := engineProcs(engine)[pid]; alive {
			t.Fatalf("stubborn engine %d still alive after unload", pid)
		}
	})
	t.Run("forks a grandchild", func(t *testing.T) {
		if js := d.waitJob(d.submit("forker", "x"), 30*time.Second); js.Status != "completed" {
			t.Fatalf("job: %+v", js)
		}
		// The engine and its grandchild: a child of the engine's pid, in the
		// engine's process group (the grandchild has no -m of its own).
		group := forkerGroup(t, engine)
		if code := d.do("POST", "/models/forker/unload", nil, nil); code >= 300 {
			t.Fatalf("unload: %d", code)
		}
		d.waitModel("forker", "unloaded", 20*time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for {
			var left []int
			for _, pid := range group {
				if procAlive(pid) {
					left = append(left, pid)
				}
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("processes %v of the forking engine's group %v left (its process group was not killed)", left, group)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	close(stopGood)
	if err := <-goodDone; err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	d.do("GET", "/health", nil, &h)
	var ms struct{ Models []map[string]any }
	d.do("GET", "/models", nil, &ms)
	reserved := 0.0
	for _, m := range ms.Models {
		if m["name"] != "good" {
			reserved += m["vram_reserved_mb"].(float64)
		}
	}
	if reserved > 2000*2 { // crash and hang may still be loaded
		t.Fatalf("faulty models still reserve %v MiB: %v", reserved, ms.Models)
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(engine); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
}

// forkerGroup finds the forker engine (by its -m) and the grandchild it
// started (a child of its pid in its process group), waiting until both
// show in /proc.
func forkerGroup(t *testing.T, engine string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for pid, m := range engineProcs(engine) {
			if m != "forker.gguf" {
				continue
			}
			for child := range engineProcs(engine) {
				if ppid, pgid, ok := procParent(child); ok && ppid == pid && pgid == pid {
					return []int{pid, child}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forker engine with a grandchild in its process group: %v", engineProcs(engine))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procParent reads a process's parent pid and process group from /proc.
func procParent(pid int) (ppid, pgid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// Fields after "(comm)": state, ppid, pgrp, …
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	return ppid, pgid, err1 == nil && err2 == nil
}

// procAlive says whether pid is a live process (a zombie holds nothing).
func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
