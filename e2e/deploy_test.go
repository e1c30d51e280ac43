package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/config"
)

const unitPath = "deploy/systemd/vramcram.service"

// unitSettings reads KEY=VALUE lines of a unit file (the last one wins).
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}

// TestSystemdUnit_StopTimeoutCoversGracefulShutdown: systemd must not
// SIGKILL VramCram while it is still letting jobs finish and stopping
// engines with the default settings.
func TestSystemdUnit_StopTimeoutCoversGracefulShutdown(t *testing.T) {
	u := unitSettings(t, unitPath)
	stop, err := strconv.Atoi(u["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec %q: %v", u["TimeoutStopSec"], err)
	}
	d := config.Default().Agents
	need := 5 + d.GracefulShutdownTimeoutSeconds + d.StopGraceSeconds // open requests, jobs, engines
	if stop < need {
		t.Errorf("TimeoutStopSec=%d < %d s that a default graceful stop may take", stop, need)
	}
	for k, want := range map[string]string{
		"KillMode": "mixed", "User": "vramcram", "Restart": "on-failure", "StateDirectory": "vramcram",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"Environment": "VRAMCRAM_STORAGE__DATA_DIR=/var/lib/vramcram",
	} {
		if u[k] != want {
			t.Errorf("%s=%q, want %q", k, u[k], want)
		}
	}
	if !strings.HasPrefix(u["ExecStart"], "/usr/local/bin/vramcram serve -config ") {
		t.Errorf("ExecStart=%q", u["ExecStart"])
	}
}

// TestSystemdUnit_Verify runs systemd-analyze verify on the unit, with
// ExecStart pointing at a built binary (verify checks that it exists). Any
// warning fails the test: verify exits 0 on unknown keys.
func TestSystemdUnit_Verify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: unit not verified")
	}
	bin, _ := buildBinaries(t)
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/vramcram", bin)
	path := filepath.Join(t.TempDir(), "vramcram.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
