package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Records keeps one file per running engine under a directory, so that after
// VramCram itself was killed (SIGKILL, power loss of the daemon only, OOM
// killer) the next start can find the engines it left behind and stop them
// before they hold VRAM and ports forever.
type Records struct {
	dir       string
	startTime func(pid int) (uint64, error) // procStartTime; tests stand in for pid reuse
}

// record is the content of one pid file.
type record struct {
	PID       int    `json:"pid"`
	Model     string `json:"model"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22: guards against PID reuse
}

// OpenRecords creates dir if needed.
func OpenRecords(dir string) (*Records, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("pid records: %w", err)
	}
	return &Records{dir: dir, startTime: procStartTime}, nil
}

// Track writes a record for pid and removes it once done is closed. The
// file is named by pid and start time, so that a late removal can never hit
// the record of a newer engine that got the same pid.
func (r *Records) Track(model string, pid int, done <-chan struct{}) {
	st, _ := r.startTime(pid)
	b, _ := json.Marshal(record{PID: pid, Model: model, StartTime: st})
	path := filepath.Join(r.dir, strconv.Itoa(pid)+"-"+strconv.FormatUint(st, 10)+".json")
	if err := os.WriteFile(path, b, 0o640); err != nil {
		return
	}
	go func() {
		<-done
		_ = os.Remove(path)
	}()
}

// Orphan is an engine from an earlier run that ReapOrphans stopped.
type Orphan struct {
	PID   int
	Model string
}

// ReapOrphans kills the process group of every recorded engine that still
// runs (same PID and same start time), or whose leader is gone while
// members of its group live on (children holding GPU memory), and removes
// all records. It waits up to wait for them to be gone.
func (r *Records) ReapOrphans(wait time.Duration) ([]Orphan, error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("read pid records: %w", err)
	}
	var reaped []Orphan
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(r.dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var rec record
		if json.Unmarshal(b, &rec) == nil && rec.PID > 1 && reapGroup(rec, wait) {
			reaped = append(reaped, Orphan{PID: rec.PID, Model: rec.Model})
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return reaped, errors.Join(errs...)
}

// reapGroup kills rec's process group if its leader still runs, or if the
// leader is gone (no process has its pid) while processes of its group,
// started no earlier than it, still run: while any process is in a group,
// Linux gives the group's id to no new process, so those are the engine's.
// A pid now held by another process (a different start time) is left
// alone. Reports whether it killed anything.
func reapGroup(rec record, wait time.Duration) bool {
	st, err := procStartTime(rec.PID)
	switch {
	case err == nil && st == rec.StartTime:
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
		_ = syscall.Kill(rec.PID, syscall.SIGKILL)
		waitGone(rec.PID, rec.StartTime, wait)
		return true
	case err == nil: // the pid belongs to another process now
		return false
	}
	members := groupMembers(rec.PID, rec.StartTime)
	if len(members) == 0 {
		return false
	}
	_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
	for pid, start := range members {
		waitGone(pid, start, wait)
	}
	return true
}

// groupMembers lists the processes (pid → start time) of process group
// pgid that started at or after start, from /proc.
func groupMembers(pgid int, start uint64) map[int]uint64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[int]uint64{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		// f[0] is field 3 (state), f[2] field 5 (pgrp), f[19] field 22 (start time).
		if err != nil || len(f) < 20 || f[0] == "Z" || f[2] != strconv.Itoa(pgid) {
			continue
		}
		if st, err := strconv.ParseUint(f[19], 10, 64); err == nil && st >= start {
			out[pid] = st
		}
	}
	return out
}

func waitGone(pid int, start uint64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		st, err := procStartTime(pid)
		if err != nil || st != start || procZombie(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStartTime reads the start time (clock ticks since boot) of pid.
func procStartTime(pid int) (uint64, error) {
	fields, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(fields) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// fields[0] is field 3 (state); start time is field 22.
	return strconv.ParseUint(fields[19], 10, 64)
}

func procZombie(pid int) bool {
	fields, err := procStat(pid)
	return err == nil && len(fields) > 0 && fields[0] == "Z"
}

// procStat returns the fields of /proc/PID/stat after the command name.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(s[i+1:]), nil
}
