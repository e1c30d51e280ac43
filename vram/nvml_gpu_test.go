//go:build nvml && !nonvml

package vram

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// These tests need an NVIDIA driver and GPU (make test-gpu: -tags nvml). They
// skip where NVML cannot be initialised.

func openGPU(t *testing.T) *NVML {
	t.Helper()
	n, err := OpenNVML(nil, 0, slogtest(t))
	if err != nil {
		t.Skipf("no NVML: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func TestGPU_Read(t *testing.T) {
	n := openGPU(t)
	r, err := n.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: total %d MiB, free %d MiB, used %d MiB, processes %v",
		n.DeviceName(), r.TotalMB, r.FreeMB, r.UsedMB(), r.ByPID)
	if r.Source != SourceNVML || r.TotalMB <= 0 || r.FreeMB < 0 || r.FreeMB > r.TotalMB {
		t.Errorf("implausible reading %+v", r)
	}
	if n.DeviceName() == "" {
		t.Error("no device name")
	}
	if got := r.NotOursMB(nil); got != max(r.UsedMB(), 0) {
		t.Errorf("NotOursMB(nil) = %d, want used %d", got, r.UsedMB())
	}
}

func TestGPU_OpenMeter(t *testing.T) {
	openGPU(t) // skip without a driver
	m, src, err := OpenMeter(1, slogtest(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if src != SourceNVML {
		t.Fatalf("source = %q, want nvml", src)
	}
}

// TestGPU_ProcessListed runs a CUDA process named by GPU_TEST_CMD (for
// example a llama-server with -ngl 99 on a small model), waits for NVML to
// list its PID, kills it and waits for the memory to come back.
func TestGPU_ProcessListed(t *testing.T) {
	n := openGPU(t)
	cmdline := os.Getenv("GPU_TEST_CMD")
	if cmdline == "" {
		t.Skip("GPU_TEST_CMD not set")
	}
	before, err := n.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", "exec "+cmdline)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var held int
	for held == 0 {
		r, err := n.Read(ctx)
		if err != nil {
			t.Fatalf("pid %d never listed: %v", pid, err)
		}
		if mb, ok := r.Held(pid); ok && mb > 0 {
			held = mb
			t.Logf("pid %d holds %d MiB; free %d MiB (was %d)", pid, mb, r.FreeMB, before.FreeMB)
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pid %d never listed (last reading %+v); in a container NVML reports host PIDs", pid, r)
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	start := time.Now()
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	if err := WaitReleased(wctx, n, pid, before.FreeMB-256, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("released %d MiB in %v after exit", held, time.Since(start))
}
