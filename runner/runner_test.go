package runner

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestProcess_StartReady(t *testing.T) {
	t.Parallel()
	const loadDelay = 300 * time.Millisecond
	cfg := testConfig(t, "--test-load-delay", loadDelay.String())
	begin := time.Now()
	p := start(t, cfg)
	if p.PID() <= 0 || p.Port() <= 0 {
		t.Fatalf("PID %d, Port %d", p.PID(), p.Port())
	}
	if want := "http://127.0.0.1:" + strconv.Itoa(p.Port()); p.URL() != want {
		t.Fatalf("URL %q, want %q", p.URL(), want)
	}
	if got := p.State(); got != StateStarting {
		t.Fatalf("State %q right after Start, want starting", got)
	}
	if err := p.WaitReady(context.Background()); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	took := time.Since(begin)
	if took < loadDelay {
		t.Fatalf("ready after %s, before the %s load delay", took, loadDelay)
	}
	// Polling every 10ms: readiness is noticed well within a second even on
	// a loaded machine with -race.
	if took > loadDelay+time.Second {
		t.Fatalf("ready noticed after %s for a %s load", took, loadDelay)
	}
	if got := p.State(); got != StateReady {
		t.Fatalf("State %q, want ready", got)
	}
	resp, err := http.Get(p.URL() + "/health")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := p.WaitReady(context.Background()); err != nil {
		t.Fatalf("second WaitReady: %v", err)
	}
	if !strings.Contains(strings.Join(p.Tail(), "\n"), "llama_server: model loaded") {
		t.Fatalf("tail lacks the engine's output: %q", p.Tail())
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !errors.Is(p.Err(), ErrStopped) {
		t.Fatalf("Err after Stop = %v, want ErrStopped", p.Err())
	}
	if p.State() != StateExited {
		t.Fatalf("State %q after Stop", p.State())
	}
}

func TestStart_BinaryNotFound(t *testing.T) {
	t.Parallel()
	for _, bin := range []string{"/nonexistent/llama-server", "no-such-engine-in-path-xyz"} {
		cfg := testConfig(t)
		cfg.Binary = bin
		p, err := Start(context.Background(), cfg)
		if !errors.Is(err, ErrBinaryNotFound) || p != nil {
			t.Fatalf("%s: Start = %v, %v; want ErrBinaryNotFound", bin, p, err)
		}
	}
}

func TestProcess_MissingModel(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ArgsFunc = standInArgs("/nonexistent/model.gguf")
	p := start(t, cfg)
	err := p.WaitReady(context.Background())
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || ee.Name != "llama-a" {
		t.Fatalf("WaitReady = %v, want *ExitError code 1", err)
	}
	if !strings.Contains(err.Error(), "exiting due to model loading error") {
		t.Fatalf("message %q lacks the reason", err)
	}
	if !strings.HasPrefix(err.Error(), "engine llama-a exited with code 1: ") || !tailHas(ee.Tail, "exiting due to model loading error") || !ee.BeforeReady {
		t.Fatalf("message %q", err)
	}
	waitDone(t, p, 5*time.Second)
	if !errors.As(p.Err(), &ee) {
		t.Fatalf("Err = %v", p.Err())
	}
}

func TestProcess_FailLoad(t *testing.T) {
	t.Parallel()
	p := start(t, testConfig(t, "--test-load-delay", "100ms", "--test-fail-load"))
	err := p.WaitReady(context.Background())
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(err.Error(), "exiting due to model loading error") {
		t.Fatalf("WaitReady = %v", err)
	}
}

func TestProcess_ReadyTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-load-delay", "1m")
	cfg.ReadyTimeout = 300 * time.Millisecond
	p := start(t, cfg)
	pid := p.PID()
	begin := time.Now()
	err := p.WaitReady(context.Background())
	if !errors.Is(err, ErrReadyTimeout) {
		t.Fatalf("WaitReady = %v, want ErrReadyTimeout", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("WaitReady took %s", took)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed when WaitReady returned")
	}
	if !errors.Is(p.Err(), ErrReadyTimeout) {
		t.Fatalf("Err = %v", p.Err())
	}
	if !processGone(pid) {
		t.Fatalf("pid %d still running", pid)
	}
}

func TestProcess_WaitReadyContext(t *testing.T) {
	t.Parallel()
	p := start(t, testConfig(t, "--test-load-delay", "1m"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.WaitReady(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady = %v", err)
	}
	waitDone(t, p, time.Second)
	if !errors.Is(p.Err(), ErrStopped) {
		t.Fatalf("Err = %v, want ErrStopped", p.Err())
	}
}

func TestProcess_CrashMidJob(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--test-crash-after", "2", "--test-token-delay", "10ms"))
	if _, err := complete(context.Background(), p, "fine", nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	_, err := complete(context.Background(), p, "a b c d e f", func(s string) { got = append(got, s) })
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("Complete = %v, want an error wrapping *ExitError code 2", err)
	}
	if len(got) == 0 {
		t.Fatalf("crash came before any token: not mid-stream")
	}
	if !strings.Contains(err.Error(), "exited with code 2") {
		t.Fatalf("message %q does not mention the exit", err)
	}
	waitDone(t, p, 5*time.Second)
	if !errors.As(p.Err(), &ee) || ee.Code != 2 {
		t.Fatalf("Err = %v", p.Err())
	}
}

func TestProcess_CrashNonStream(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--test-crash-after", "1"))
	_, err := complete(context.Background(), p, "a b c", nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("Complete = %v", err)
	}
}

func TestProcess_ExitAfterReady(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--test-exit-after", "300ms"))
	waitDone(t, p, 10*time.Second)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) || ee.Code != 3 || ee.BeforeReady || tailHas(ee.Tail, "exiting due to model loading error") {
		t.Fatalf("Err = %#v, want *ExitError code 3 after ready", p.Err())
	}
	if !strings.Contains(ee.Error(), "--test-exit-after") {
		t.Fatalf("tail missing from %q", ee)
	}
}

func TestProcess_HeartbeatLost(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-hang-after", "1")
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	p := startReady(t, cfg)
	pid := p.PID()
	if _, err := complete(context.Background(), p, "x", nil); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 10*time.Second)
	if !errors.Is(p.Err(), ErrHeartbeatLost) {
		t.Fatalf("Err = %v, want ErrHeartbeatLost", p.Err())
	}
	if !strings.Contains(p.Err().Error(), "hanging after generation request 1") {
		t.Fatalf("Err %q lacks the tail", p.Err())
	}
	if !processGone(pid) {
		t.Fatalf("pid %d still running", pid)
	}
}

func TestProcess_HeartbeatWhileBusy(t *testing.T) {
	t.Parallel()
	// All slots busy for ~1s; /health stays fast, so the watchdog leaves it.
	cfg := testConfig(t, "--parallel", "1", "--test-token-delay", "20ms")
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	p := startReady(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			_, err := complete(context.Background(), p, strings.Repeat("w ", 25), nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p.State() != StateReady {
		t.Fatalf("State %q, Err %v", p.State(), p.Err())
	}
}

func TestProcess_StopIgnoresSigterm(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-ignore-sigterm")
	cfg.StopGrace = 300 * time.Millisecond
	p := startReady(t, cfg)
	pid := p.PID()
	begin := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if took < cfg.StopGrace || took > 5*time.Second {
		t.Fatalf("Stop took %s with a %s grace", took, cfg.StopGrace)
	}
	if !errors.Is(p.Err(), ErrStopped) {
		t.Fatalf("Err = %v", p.Err())
	}
	if !strings.Contains(strings.Join(p.Tail(), "\n"), "ignoring it") {
		t.Fatalf("engine never saw SIGTERM: %q", p.Tail())
	}
	if !processGone(pid) {
		t.Fatalf("pid %d still running", pid)
	}
}

func TestProcess_StopContextCutsGrace(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-ignore-sigterm")
	cfg.StopGrace = time.Minute
	p := startReady(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("Stop took %s", took)
	}
}

func TestProcess_StopConcurrent(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := p.Stop(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if !errors.Is(p.Err(), ErrStopped) {
		t.Fatalf("Err = %v", p.Err())
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestProcess_StopInFlight(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t, "--test-token-delay", "50ms"))
	first := make(chan struct{})
	var once sync.Once
	errCh := make(chan error, 1)
	go func() {
		_, err := complete(context.Background(), p, strings.Repeat("w ", 200), func(string) {
			once.Do(func() { close(first) })
		})
		errCh <- err
	}()
	<-first
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := <-errCh
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Complete = %v, want an error wrapping ErrStopped", err)
	}
}

// TestProcess_StopInFlightRealBehaviour: like llama-server, the engine does
// not exit on SIGTERM while a client waits; Stop gets there by SIGKILL.
func TestProcess_StopInFlightRealBehaviour(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-token-delay", "50ms", "--test-sigterm-waits-clients")
	cfg.StopGrace = 300 * time.Millisecond
	p := startReady(t, cfg)
	first := make(chan struct{})
	var once sync.Once
	errCh := make(chan error, 1)
	go func() {
		_, err := complete(context.Background(), p, strings.Repeat("w ", 200), func(string) {
			once.Do(func() { close(first) })
		})
		errCh <- err
	}()
	<-first
	begin := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < cfg.StopGrace {
		t.Fatalf("engine exited after %s, before the grace: it should wait for its client", took)
	}
	if err := <-errCh; err == nil {
		t.Fatal("Complete succeeded on a killed engine")
	}
}

func TestProcess_ForkGrandchild(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "--test-fork-grandchild")
	cfg.StopGrace = 2 * time.Second
	p := startReady(t, cfg)
	re := regexp.MustCompile(`forked grandchild pid (\d+)`)
	var gpid int
	waitFor(t, 5*time.Second, "grandchild pid in output", func() bool {
		m := re.FindStringSubmatch(strings.Join(p.Tail(), "\n"))
		if m != nil {
			gpid, _ = strconv.Atoi(m[1])
		}
		return m != nil
	})
	if processGone(gpid) {
		t.Fatalf("grandchild %d not running before Stop", gpid)
	}
	begin := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The grandchild ignores SIGTERM and holds the output pipe; the group
	// SIGKILL after the leader's exit must take it down without the grace.
	if took := time.Since(begin); took > cfg.StopGrace {
		t.Fatalf("Stop took %s: the grandchild was waited for", took)
	}
	waitFor(t, 5*time.Second, "grandchild gone", func() bool { return processGone(gpid) })
}

func TestProcess_PortTakenRetry(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	base := cfg.ArgsFunc
	var calls atomic.Int32
	var held net.Listener
	type spawn struct {
		pid    int
		exited <-chan struct{}
	}
	var spawns []spawn
	var mu sync.Mutex
	cfg.SpawnedFunc = func(pid int, exited <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		spawns = append(spawns, spawn{pid, exited})
	}
	cfg.ArgsFunc = func(port int) []string {
		if calls.Add(1) == 1 {
			// Someone grabs our port between our probe and the engine's bind.
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Errorf("hold port: %v", err)
			}
			held = l
		}
		return base(port)
	}
	p := startReady(t, cfg)
	if held != nil {
		defer held.Close()
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ArgsFunc called %d times, want 2", n)
	}
	if held != nil && p.Port() == held.Addr().(*net.TCPAddr).Port {
		t.Fatalf("Port() reports the taken port")
	}
	if !strings.Contains(strings.Join(p.Tail(), "\n"), cfg.PortTakenMarker) {
		t.Fatalf("tail lacks the bind failure: %q", p.Tail())
	}
	if res, err := complete(context.Background(), p, "hi", nil); err != nil || res.Text != "echo: hi" {
		t.Fatalf("Complete after retry: %+v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(spawns) != 2 || spawns[1].pid != p.PID() || spawns[0].pid == p.PID() {
		t.Fatalf("SpawnedFunc saw %v, PID %d", spawns, p.PID())
	}
	select {
	case <-spawns[0].exited:
	default:
		t.Fatal("first child's exited channel still open")
	}
	select {
	case <-spawns[1].exited:
		t.Fatal("running child's exited channel closed")
	default:
	}
}

// TestProcess_PortTakenSilently: the engine exits 1 without the bind
// message (llama-server can lose its last log lines), but its port is taken
// now: that is retried too.
func TestProcess_PortTakenSilently(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	base := cfg.ArgsFunc
	var calls atomic.Int32
	var held net.Listener
	cfg.ArgsFunc = func(port int) []string {
		if calls.Add(1) == 1 {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Errorf("hold port: %v", err)
			}
			held = l
			// Any quick exit 1 that does not mention the port.
			return []string{"-m", "/nonexistent/model.gguf", "--port", "0"}
		}
		return base(port)
	}
	p := startReady(t, cfg)
	if held != nil {
		held.Close()
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ArgsFunc called %d times, want 2", n)
	}
	if p.State() != StateReady {
		t.Fatalf("State %q", p.State())
	}
}

func TestProcess_PortTakenGivesUp(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	cfg := testConfig(t)
	base := cfg.ArgsFunc
	var calls atomic.Int32
	cfg.ArgsFunc = func(int) []string {
		calls.Add(1)
		return base(taken)
	}
	p := start(t, cfg)
	err = p.WaitReady(context.Background())
	var ee *ExitError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), cfg.PortTakenMarker) {
		t.Fatalf("WaitReady = %v", err)
	}
	if n := calls.Load(); n != maxSpawns {
		t.Fatalf("%d spawns, want %d", n, maxSpawns)
	}
}

func TestProcess_ExitOnItsOwn(t *testing.T) {
	t.Parallel()
	// A binary that exits on its own at once: Done closes without Stop.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cfg := Config{
		Name:     "sh",
		Binary:   sh,
		ArgsFunc: func(int) []string { return []string{"-c", `echo "value=$VRAMCRAM_TEST"; exit 7`} },
		Env:      []string{"VRAMCRAM_TEST=42"},
		Logger:   testLogger(t),
	}
	p := start(t, cfg)
	waitDone(t, p, 5*time.Second)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) || ee.Code != 7 || len(ee.Tail) != 1 || ee.Tail[0] != "value=42" {
		t.Fatalf("Err = %#v", p.Err())
	}
}

func TestProcess_KilledBySignal(t *testing.T) {
	t.Parallel()
	p := startReady(t, testConfig(t))
	if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, 5*time.Second)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) || ee.Signal != "killed" || ee.Code != -1 {
		t.Fatalf("Err = %v", p.Err())
	}
	if !strings.Contains(ee.Error(), "killed by signal killed") {
		t.Fatalf("message %q", ee)
	}
}

func TestExitError_Error(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  ExitError
		want string
	}{
		{ExitError{Name: "a", Code: 1}, "engine a exited with code 1"},
		{ExitError{Name: "a", Code: 1, Tail: []string{"x", "", "main: exiting due to model loading error", "  "}},
			"engine a exited with code 1: x | main: exiting due to model loading error"},
		{ExitError{Name: "b", Code: -1, Signal: "killed", Tail: []string{"1", "2", "3", "4", "5", "6"}},
			"engine b killed by signal killed: 2 | 3 | 4 | 5 | 6"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestRing(t *testing.T) {
	t.Parallel()
	r := newRing(3)
	if got := r.lines(); len(got) != 0 {
		t.Fatalf("empty ring: %q", got)
	}
	for i := range 5 {
		r.add(strconv.Itoa(i))
	}
	if got := strings.Join(r.lines(), ","); got != "2,3,4" {
		t.Fatalf("ring = %s", got)
	}
}

func TestReadLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxLineLen+100)
	var got []string
	readLines(strings.NewReader("a\r\nb\n"+long+"\nlast"), func(s string) { got = append(got, s) })
	if len(got) != 4 || got[0] != "a" || got[1] != "b" || len(got[2]) != maxLineLen || got[3] != "last" {
		t.Fatalf("lines %d: %q %q len %d", len(got), got[0], got[1], len(got[2]))
	}
}

func ptr[T any](v T) *T { return &v }

func TestRedactArgs(t *testing.T) {
	t.Parallel()
	in := []string{"-m", "a", "--api-key", "s3cret", "--api-key=other", "--api-key-file", "/k"}
	got := strings.Join(redactArgs(in), " ")
	if want := "-m a --api-key REDACTED --api-key=REDACTED --api-key-file /k"; got != want {
		t.Fatalf("got %s", got)
	}
	if in[3] != "s3cret" {
		t.Fatal("redactArgs changed its input")
	}
}

func TestReadTermLines(t *testing.T) {
	t.Parallel()
	in := "a\n\r  |=>  | 1/2 - 1.00it/s\x1b[K\r  |==| 2/2 - 1.00it/s\x1b[K\nb\r\nlast"
	var got []string
	readTermLines(strings.NewReader(in), func(s string) { got = append(got, s) })
	want := []string{"a", "  |=>  | 1/2 - 1.00it/s", "  |==| 2/2 - 1.00it/s", "b", "", "last"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
	long := strings.Repeat("x", 3*maxLineLen) + "\nnext\n"
	got = nil
	readTermLines(strings.NewReader(long), func(s string) { got = append(got, s) })
	if len(got) != 2 || len(got[0]) != maxLineLen || got[1] != "next" {
		t.Fatalf("long line: %d lines, first %d bytes", len(got), len(got[0]))
	}
}

// Another program answering on the engine's port, while the engine has not
// bound it yet (sd-server loads its model before it listens), does not make
// the engine ready: its listener is not the engine's.
func TestProcess_ForeignListenerIsNotReadiness(t *testing.T) {
	t.Parallel()
	p, err := Start(context.Background(), Config{
		Name: "late-binder", Binary: "/bin/sh", ReadyPath: "/v1/models", ReadyTimeout: 1500 * time.Millisecond, OwnListener: true,
		ArgsFunc: func(int) []string { return []string{"-c", "sleep 30"} }, // never listens
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"data":[]}`)) })}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	if err := p.WaitReady(context.Background()); !errors.Is(err, ErrReadyTimeout) {
		t.Fatalf("WaitReady = %v with only a foreign listener on the port, want ErrReadyTimeout", err)
	}
}
