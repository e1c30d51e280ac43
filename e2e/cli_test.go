package e2e

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/cli"
)

// The client commands against a running daemon with stand-in engines.

// writeLog records each Write separately, so a test can tell streamed text
// from text written at once.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.writes, "")
}

func (w *writeLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

// cliRun runs a client command in-process against the daemon; env holds
// extra variables (name, value pairs).
func (d *daemon) cli(stdout, stderr interface{ Write([]byte) (int, error) }, env []string, args ...string) int {
	vars := map[string]string{cli.EnvURL: d.url}
	for i := 0; i+1 < len(env); i += 2 {
		vars[env[i]] = env[i+1]
	}
	return cli.Main(args[0], args[1:], cli.NewIO(strings.NewReader(""), stdout, stderr, func(k string) string { return vars[k] }))
}

// run runs a client command and returns its exit code and output.
func (d *daemon) run(args ...string) (int, string, string) {
	var out, errb syncBuffer
	code := d.cli(&out, &errb, nil, args...)
	return code, out.String(), errb.String()
}

var jobIDPattern = regexp.MustCompile(`job ([a-z0-9]{20}) queued`)

func TestE2E_CLI(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port)
	stopAtCleanup(t, d)

	t.Run("SubmitWaitStreamsTokens", func(t *testing.T) {
		var out writeLog
		var errb syncBuffer
		code := d.cli(&out, &errb, nil, "submit", "-m", "alpha", "--wait", "--stream", "tell", "me", "a", "story")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if got := out.String(); got != "echo: tell me a story\n" {
			t.Fatalf("stdout %q", got)
		}
		if out.count() < 4 {
			t.Errorf("stdout came in %d writes %q; want the tokens one by one", out.count(), out.writes)
		}
		stderr := errb.String()
		for _, re := range []string{
			`^job [a-z0-9]{20} queued for alpha\n`,
			`\nloading model alpha \(4000 MiB reserved\)\n`,
			`\nmodel alpha ready \(loaded in [0-9.]+s\)\n`,
			`\nrunning on alpha\n`,
			`\ncompleted in [0-9.]+m?s \(waited [0-9.]+m?s, ran [0-9.]+m?s\)\n$`,
		} {
			if !regexp.MustCompile(re).MatchString(stderr) {
				t.Errorf("stderr does not match %s:\n%s", re, stderr)
			}
		}
	})

	t.Run("SubmitWaitPipedPrintsResultOnce", func(t *testing.T) {
		var out writeLog
		var errb syncBuffer
		if code := d.cli(&out, &errb, nil, "submit", "-m", "beta", "--wait", "-q", "--max-tokens", "2", "one two three"); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if got := out.String(); got != "echo: one\n" && got != "echo: one two\n" {
			t.Fatalf("stdout %q: want the first tokens only (max_tokens 2)", got)
		}
		if out.count() != 1 || errb.String() != "" {
			t.Errorf("writes %q, stderr %q: want the result in one write and no progress (-q)", out.writes, errb.String())
		}
	})

	t.Run("SubmitStatusResult", func(t *testing.T) {
		code, stdout, stderr := d.run("submit", "-m", "gamma", "--priority", "5", "status", "check")
		id := strings.TrimSpace(stdout)
		if code != 0 || len(id) != 20 {
			t.Fatalf("submit: exit %d, stdout %q, stderr %s", code, stdout, stderr)
		}
		d.waitJob(id, 30*time.Second)
		code, stdout, _ = d.run("status", id)
		for _, want := range []string{"job       " + id, "status    completed (attempt 1 of 5)", "model     gamma (llm), priority 5", "finished  "} {
			if code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("status: exit %d, stdout lacks %q:\n%s", code, want, stdout)
			}
		}
		if code, stdout, _ = d.run("result", id); code != 0 || stdout != "echo: status check\n" {
			t.Errorf("result: exit %d, %q", code, stdout)
		}
		if code, stdout, _ = d.run("status", "--json", id); code != 0 || !strings.Contains(stdout, `"status":"completed"`) {
			t.Errorf("status --json: exit %d, %q", code, stdout)
		}
		code, stdout, stderr = d.run("cancel", id)
		if want := "vramcram cancel: job already completed (already_finished)\n"; code != 1 || stdout != "" || stderr != want {
			t.Errorf("cancel of a finished job: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
		}
	})

	t.Run("CancelRunningJobEndsTheWait", func(t *testing.T) {
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- d.cli(&out, &errb, nil, "submit", "-m", "alpha", "--wait", strings.Repeat("word ", 2000))
		}()
		id := waitFor(t, func() string {
			if !strings.Contains(errb.String(), "running on alpha") {
				return ""
			}
			return jobIDPattern.FindStringSubmatch(errb.String())[1]
		})
		code, stdout, stderr := d.run("cancel", id)
		if code != 0 || stdout != "cancelled "+id+" (was running)\n" {
			t.Fatalf("cancel: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if code := <-done; code != 1 || !strings.HasSuffix(errb.String(), "vramcram submit: job "+id+" was cancelled\n") {
			t.Errorf("the waiting submit: exit %d, stderr:\n%s", code, errb.String())
		}
	})

	t.Run("WaitTimeout", func(t *testing.T) {
		code, _, stderr := d.run("submit", "-m", "alpha", "--wait", "-q", "--timeout", "300ms", strings.Repeat("word ", 3000))
		m := regexp.MustCompile(`^vramcram submit: gave up waiting after 300ms \(--timeout\); job ([a-z0-9]{20}) goes on \(vramcram cancel ([a-z0-9]{20}) stops it\)\n$`).FindStringSubmatch(stderr)
		if code != 1 || m == nil {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if code, _, _ := d.run("cancel", m[1]); code != 0 {
			t.Errorf("cancel the abandoned job: exit %d", code)
		}
	})

	t.Run("LoadPsModelsUnload", func(t *testing.T) {
		if code, stdout, stderr := d.run("load", "--wait", "gamma"); code != 0 || stdout != "gamma is ready (4000 MiB reserved)\n" {
			t.Fatalf("load: exit %d, %q, %s", code, stdout, stderr)
		}
		code, stdout, _ := d.run("ps")
		row := regexp.MustCompile(`(?m)^gamma\s+ready\s+0\s+4000 MiB\s+-\s+0/2\s+\S+\s+\S+\s+\S+ ago\s+\d+$`)
		if code != 0 || !row.MatchString(stdout) || !strings.HasPrefix(stdout, "NAME  ") || !strings.Contains(stdout, "MiB budget reserved") {
			t.Errorf("ps: exit %d:\n%s", code, stdout)
		}
		code, stdout, _ = d.run("models")
		if code != 0 || strings.Count(stdout, "\n") != 4 || !regexp.MustCompile(`(?m)^gamma\s+llm\s+ready\s+4000 MiB\s+0\s+0\s+`).MatchString(stdout) {
			t.Errorf("models: exit %d:\n%s", code, stdout)
		}
		if code, stdout, _ := d.run("unload", "--wait", "gamma"); code != 0 || stdout != "gamma is unloaded\n" {
			t.Errorf("unload: exit %d, %q", code, stdout)
		}
		if _, stdout, _ := d.run("ps"); strings.Contains(stdout, "gamma") {
			t.Errorf("gamma still in ps after unload:\n%s", stdout)
		}
	})

	t.Run("ErrorsAreOneLine", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"submit", "-m", "nope", "hi"}, `vramcram submit: model: unknown model "nope"; configured models: alpha, beta, gamma (unknown_model)` + "\n"},
			{[]string{"status", "aaaaaaaaaaaaaaaaaaaa"}, `vramcram status: no job "aaaaaaaaaaaaaaaaaaaa" (not_found)` + "\n"},
			{[]string{"load", "nope"}, `vramcram load: model: unknown model "nope"; configured models: alpha, beta, gamma (unknown_model)` + "\n"},
			{[]string{"submit", "-m", "alpha", "--params", `{"temperature":9}`, "hi"}, "vramcram submit: params.temperature"},
		} {
			code, stdout, stderr := d.run(tc.args...)
			if code != 1 || stdout != "" || !strings.HasPrefix(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.args, code, stdout, stderr, tc.want)
			}
		}
	})

	t.Run("Binary", func(t *testing.T) {
		cmd := exec.Command(bin, "submit", "-m", "alpha", "--wait", "hello", "binary")
		cmd.Env = append(cleanEnv(), cli.EnvURL+"="+d.url, "GORACE=atexit_sleep_ms=0")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil || out.String() != "echo: hello binary\n" {
			t.Fatalf("%v: stdout %q, stderr %s", err, out.String(), errb.String())
		}
		cmd = exec.Command(bin, "result", "--url", "127.0.0.1:1", "x")
		cmd.Env = cleanEnv()
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
			!strings.HasPrefix(string(b), "vramcram result: cannot reach VramCram at http://127.0.0.1:1 (set --url or VRAMCRAM_URL): ") {
			t.Errorf("unreachable server: %v, %q", err, b)
		}
		cmd = exec.Command(bin, "submit", "--wait")
		cmd.Env = cleanEnv()
		if err := cmd.Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
			t.Errorf("usage error: %v, want exit 2", err)
		}
	})
}

func TestE2E_CLIWithAPIKey(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	d := startDaemon(t, bin, s.cfg, s.port, "VRAMCRAM_SERVER__API_KEYS=k1,k2")
	stopAtCleanup(t, d)
	var out, errb syncBuffer
	code := d.cli(&out, &errb, nil, "models")
	if code != 1 || !strings.Contains(errb.String(), "(unauthorized)") {
		t.Fatalf("no key: exit %d, %q", code, errb.String())
	}
	var out2, errb2 syncBuffer
	code = d.cli(&out2, &errb2, []string{cli.EnvAPIKey, "k2"}, "submit", "-m", "beta", "--wait", "--stream", "with", "key")
	if code != 0 || out2.String() != "echo: with key\n" {
		t.Fatalf("with key: exit %d, stdout %q, stderr %s", code, out2.String(), errb2.String())
	}
	if !strings.Contains(errb2.String(), "running on beta") {
		t.Errorf("no progress with a key (is /events authorised?):\n%s", errb2.String())
	}
}

// stopAtCleanup stops the daemon with SIGTERM when the test ends, so that it
// stops its engines: the cleanup of startDaemon kills it with SIGKILL, which
// leaves them running. Registered after startDaemon, it runs before that.
func stopAtCleanup(t *testing.T, d *daemon) {
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Error("daemon still running 30 s after SIGTERM")
		}
	})
}

// waitFor polls f until it returns a non-empty string (30 s at most).
func waitFor(t *testing.T, f func() string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s := f(); s != "" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
