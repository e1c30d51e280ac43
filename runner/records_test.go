package runner

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// running reports whether pid is a live (not zombie) process.
func running(pid int) bool {
	f, err := procStat(pid)
	return err == nil && len(f) > 0 && f[0] != "Z"
}

// After VramCram was SIGKILLed, an engine whose leader then exited on its
// own leaves its children running in its group, holding GPU memory: the
// next start's ReapOrphans kills them too.
func TestRecords_ReapsGroupWhoseLeaderIsGone(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	cmd := exec.Command("/bin/sh", "-c", "sleep 300 & echo $! > "+pidFile+"; sleep 0.3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRecords(filepath.Join(dir, "records"))
	if err != nil {
		t.Fatal(err)
	}
	died := make(chan struct{}) // not closed until the test ends: VramCram "died"
	t.Cleanup(func() { close(died) })
	r.Track("m", cmd.Process.Pid, died)
	_ = cmd.Wait() // the leader exits and is reaped
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if !running(child) {
		t.Fatalf("the child %d is not running before the reap", child)
	}
	orphans, err := r.ReapOrphans(5 * time.Second)
	if err != nil || len(orphans) != 1 || orphans[0].Model != "m" {
		t.Fatalf("orphans %v, %v; want the one engine", orphans, err)
	}
	if running(child) {
		t.Fatalf("child %d of the recorded group survived ReapOrphans", child)
	}
	if left, _ := os.ReadDir(r.dir); len(left) != 0 {
		t.Fatalf("records left: %v", left)
	}
}

// A record is named by pid and start time: the late cleanup of an engine
// that exited leaves the record of a newer engine given the same pid (both
// were PID.json, and the old cleanup deleted the new record).
func TestRecords_LateCleanupKeepsNewerRecord(t *testing.T) {
	r, err := OpenRecords(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pid, start := os.Getpid(), uint64(100)
	r.startTime = func(int) (uint64, error) { return start, nil }
	oldDone, newDone := make(chan struct{}), make(chan struct{})
	r.Track("old", pid, oldDone)
	start = 200 // the pid, reused by a newer engine
	r.Track("new", pid, newDone)
	close(oldDone)
	want := strconv.Itoa(pid) + "-200.json"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left, _ := os.ReadDir(r.dir)
		if len(left) == 1 && left[0].Name() == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records %v, want only %s", left, want)
		}
	}
	close(newDone)
}
