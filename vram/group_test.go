package vram

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestProcessGroup_OfAChildInItsOwnGroup(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	g, ok := processGroup(cmd.Process.Pid)
	if !ok || g != cmd.Process.Pid {
		t.Fatalf("group of leader = %d, %v; want its own pid %d", g, ok, cmd.Process.Pid)
	}
	if g, ok := processGroup(os.Getpid()); !ok || g != syscall.Getpgrp() {
		t.Fatalf("own group = %d, %v; want %d", g, ok, syscall.Getpgrp())
	}
	if _, ok := processGroup(1 << 30); ok {
		t.Fatal("a PID that does not exist has a group")
	}
}

func TestReading_GroupMembersCountAsTheEngine(t *testing.T) {
	r := Reading{Source: SourceNVML, TotalMB: 10000, FreeMB: 4000,
		ByPID: map[int]int{100: 0, 101: 3000, 200: 1000, 300: 2000},
		Group: map[int]int{100: 100, 101: 100, 200: 200}}
	if mb, listed := r.Held(100); !listed || mb != 3000 {
		t.Fatalf("engine 100 holds %d (listed %v), want 3000 through its helper 101", mb, listed)
	}
	if got := r.NotOursMB(map[int]bool{100: true}); got != 3000 {
		t.Fatalf("not ours = %d, want 6000 used − 3000 ours", got)
	}
}
