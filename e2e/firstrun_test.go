package e2e

import (
	"context"
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

// First run of the real binary: help, version, global flags before the
// command, config discovery and the guidance when there is no config.

// firstRunEnv is the test's environment without VRAMCRAM_*, HOME and
// XDG_CONFIG_HOME, with HOME set to home.
func firstRunEnv(home string) []string {
	var env []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home)
}

// exitCode runs cmd and returns its exit status, stdout and stderr.
func exitCode(t *testing.T, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errb.String()
	}
	if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return 0, out.String(), errb.String()
}

func TestE2E_FirstRun(t *testing.T) {
	bin, engine := buildBinaries(t)

	t.Run("Help", func(t *testing.T) {
		for _, arg := range []string{"-h", "--help", "help"} {
			code, out, errb := exitCode(t, exec.Command(bin, arg))
			if code != 0 || errb != "" {
				t.Fatalf("%s: exit %d, stderr %q", arg, code, errb)
			}
			for _, cmd := range []string{"serve", "check", "version", "submit", "status", "result", "cancel", "ps", "models", "load", "unload"} {
				if !strings.Contains(out, "vramcram "+cmd) && !strings.Contains(out, "vramcram ["+cmd+"]") {
					t.Errorf("%s: no %q in\n%s", arg, cmd, out)
				}
			}
		}
	})

	t.Run("Version", func(t *testing.T) {
		for _, arg := range []string{"--version", "-v", "version"} {
			code, out, _ := exitCode(t, exec.Command(bin, arg))
			if code != 0 || !strings.HasPrefix(out, "vramcram dev\n") || !strings.Contains(out, "go1.") {
				t.Fatalf("%s: exit %d, stdout %q", arg, code, out)
			}
		}
	})

	// A bare vramcram where no config file is found explains how to start,
	// exits 2 and writes nothing (no ./data).
	t.Run("NoConfig", func(t *testing.T) {
		if _, err := os.Stat("/etc/vramcram/config.yaml"); err == nil {
			t.Skip("/etc/vramcram/config.yaml exists on this machine")
		}
		dir, home := t.TempDir(), t.TempDir()
		// A daemon that started anyway would run until killed.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Dir, cmd.Env = dir, firstRunEnv(home)
		code, out, errb := exitCode(t, cmd)
		if code != 2 || out != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 2", code, out, errb)
		}
		for _, w := range []string{"no config file", "./vramcram.yaml", filepath.Join(home, ".config/vramcram/config.yaml"), "/etc/vramcram/config.yaml", "make demo", "-config FILE", "config.example.yaml"} {
			if !strings.Contains(errb, w) {
				t.Errorf("guidance lacks %q:\n%s", w, errb)
			}
		}
		for _, d := range []string{dir, home} {
			if entries, _ := os.ReadDir(d); len(entries) > 0 {
				t.Errorf("%s: created %v", d, entries)
			}
		}
	})

	// vramcram.yaml in the working directory is found without -config, and
	// the client's --url works before the command.
	t.Run("FoundInWorkingDirAndURLFirst", func(t *testing.T) {
		s := writeE2EConfig(t, engine)
		dir, home := t.TempDir(), t.TempDir()
		copyFile(t, s.cfg, filepath.Join(dir, "vramcram.yaml"), 0o644)
		// Lower in the search order: must not be the one used.
		xdg := filepath.Join(home, ".config/vramcram/config.yaml")
		if err := os.MkdirAll(filepath.Dir(xdg), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(xdg, []byte("server: {port: 1}\nbogus_key: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin)
		cmd.Dir, cmd.Env = dir, firstRunEnv(home)
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			if t.Failed() {
				t.Logf("daemon log:\n%s", lastLines(logs.String(), 40))
			}
		})
		url := fmt.Sprintf("http://127.0.0.1:%d", s.port)
		waitHealthy(t, url, done, logs, 2*time.Minute)
		if !strings.Contains(logs.String(), `"path":"vramcram.yaml"`) {
			t.Errorf("daemon does not log the config it found:\n%s", lastLines(logs.String(), 20))
		}
		code, out, errb := exitCode(t, exec.Command(bin, "--url", url, "ps"))
		if code != 0 || !strings.Contains(out, "MiB budget reserved") {
			t.Fatalf("--url URL ps: exit %d, stdout %q, stderr %q", code, out, errb)
		}
		code, out, errb = exitCode(t, exec.Command(bin, "--url", url, "submit", "-m", "alpha", "--wait", "first", "run"))
		if code != 0 || out != "echo: first run\n" {
			t.Fatalf("--url URL submit --wait: exit %d, stdout %q, stderr %q", code, out, errb)
		}
	})
}

// waitHealthy polls url/health until it answers 200; done closing first,
// or the timeout passing, fails the test.
func waitHealthy(t *testing.T, url string, done <-chan struct{}, logs *syncBuffer, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("daemon exited during start-up:\n%s", lastLines(logs.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after %v:\n%s", url, timeout, lastLines(logs.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
