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
	dir string
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
	return &Records{dir: dir}, nil
}

// Track writes a record for pid and removes it once done is closed.
func (r *Records) Track(model string, pid int, done <-chan struct{}) {
	st, _ := procStartTime(pid)
	b, _ := json.Marshal(record{PID: pid, Model: model, StartTime: st})
	path := filepath.Join(r.dir, strconv.Itoa(pid)+".json")
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
// runs (same PID and same start time) and removes all records. It waits up to
// wait for them to be gone.
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
		if json.Unmarshal(b, &rec) == nil && rec.PID > 1 {
			if st, err := procStartTime(rec.PID); err == nil && st == rec.StartTime {
				_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
				_ = syscall.Kill(rec.PID, syscall.SIGKILL)
				waitGone(rec.PID, rec.StartTime, wait)
				reaped = append(reaped, Orphan{PID: rec.PID, Model: rec.Model})
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return reaped, errors.Join(errs...)
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
