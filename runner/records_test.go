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
// that exited leaves the record of a newer engine given the same pid.
func TestRecords_LateCleanupKeepsNewerRecord(t *testing.T) {
	r, err := OpenRecords(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	st, err := procStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	r.Track("old", pid, done)
	newer := filepath.Join(r.dir, strconv.Itoa(pid)+"-"+strconv.FormatUint(st+1, 10)+".json")
	if err := os.WriteFile(newer, []byte(`{"pid":1,"model":"new"}`), 0o640); err != nil {
		t.Fatal(err)
	}
	close(done)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left, _ := os.ReadDir(r.dir)
		if len(left) == 1 {
			if left[0].Name() != filepath.Base(newer) {
				t.Fatalf("left %s, want the newer record", left[0].Name())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records %v", left)
		}
	}
}
