package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procStatusKB reads a "Name: N kB" line of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, name string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return 0
}

// raiseFileLimit lets this process hold n more connections.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = min(max(n, lim.Cur), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < n {
		t.Skipf("open-file limit %d (hard %d) is below the %d this test needs: %v", lim.Cur, lim.Max, n, err)
	}
}

// slowBody opens a connection, declares a 1 MiB body, sends one byte and
// then nothing. It returns the status line of the answer and whether the
// server closed the connection after it.
func slowBody(addr string) (string, bool, error) {
	c, err := net.DialTimeout("tcp", addr, 60*time.Second)
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	head := "POST /jobs HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{"
	if _, err := io.WriteString(c, head); err != nil {
		return "", false, err
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	return resp.Status, err != nil && !os.IsTimeout(err), nil
}

// 3,000 clients that declare a 1 MiB body and send one byte: the daemon's
// memory follows the bytes received (not the declared lengths), at most
// server.max_connections are open at once (the others wait in the
// backlog), and each is answered 408 and closed once its body has been
// idle for server.body_idle_timeout_seconds. Before, the daemon grew by
// 1 MiB per connection (3.1 GB) and held them all for ever.
func TestE2E_SlowBodiesAreBoundedAndClosed(t *testing.T) {
	_, engine := buildBinaries(t)
	bin := buildPlainBin(t)
	const clients = 3000
	raiseFileLimit(t, clients+1000)
	s := writeSchedConfig(t, engine, 10000, "policy: batch", schedModel{name: "m", mb: 1000})
	cfg, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	limited := strings.Replace(string(cfg), "metrics_port: 0}", "metrics_port: 0, body_idle_timeout_seconds: 2, max_connections: 1024}", 1)
	if err := os.WriteFile(s.cfg, []byte(limited), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, s.cfg, s.port)
	pid := d.cmd.Process.Pid
	baseKB := procStatusKB(t, pid, "VmRSS")

	addr := strings.TrimPrefix(d.url, "http://")
	type result struct {
		status string
		closed bool
		err    error
	}
	results := make(chan result, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			st, closed, err := slowBody(addr)
			results <- result{st, closed, err}
		})
	}
	wg.Wait()
	close(results)
	peakKB := procStatusKB(t, pid, "VmHWM") // the highest RSS the daemon ever had
	growthMB := (peakKB - baseKB) / 1024
	t.Logf("daemon RSS: %d MB before, peak %d MB (+%d MB) over %d slow bodies", baseKB/1024, peakKB/1024, growthMB, clients)
	if growthMB >= 100 {
		t.Errorf("daemon RSS grew by %d MB (peak %d MB), want under 100 MB", growthMB, peakKB/1024)
	}
	answered := map[string]int{}
	for r := range results {
		switch {
		case r.err != nil:
			answered["error: "+r.err.Error()[max(0, len(r.err.Error())-20):]]++
		case !r.closed:
			answered["left open after "+r.status]++
		default:
			answered[r.status]++
		}
	}
	if answered["408 Request Timeout"] != clients {
		t.Fatalf("answers %v, want %d × 408 and closed", answered, clients)
	}
	// Still serving.
	var h map[string]any
	if code := d.do("GET", "/health", nil, &h); code != http.StatusOK {
		t.Fatalf("health after the slow clients: %d %v", code, h)
	}
}
