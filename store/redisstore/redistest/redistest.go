// Package redistest starts a real redis-server for tests: on a loopback
// port, in a temporary directory, with persistence on (appendonly yes). No
// mock Redis is used anywhere in VramCram's tests.
//
// When redis-server is not installed, Start skips the test, unless
// REDIS_TEST_REQUIRED is set (CI sets it), where it fails with the reason.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is one redis-server process and its data directory. Stop and
// Restart let a test cut Redis off and bring it back with its data.
type Server struct {
	Addr  string // 127.0.0.1:PORT
	Dir   string
	Fsync string // appendfsync: always | everysec
	bin   string
	cmd   *exec.Cmd
	exit  chan struct{}
	tb    testing.TB
}

// URL is the server's redis:// URL (database 0).
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Binary returns the path of redis-server, or skips (fails under
// REDIS_TEST_REQUIRED) when it is not installed.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not installed (apt-get install redis-server): " + err.Error()
		if os.Getenv("REDIS_TEST_REQUIRED") != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return bin
}

// Start runs a redis-server for the test on a free loopback port with
// appendonly yes and appendfsync always; the test's cleanup stops it.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{bin: Binary(tb), Dir: tb.TempDir(), Fsync: "always", tb: tb}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	_ = ln.Close()
	if err := s.Restart(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Restart starts the server again on the same port and directory (it must
// be stopped), and waits until it answers PING.
func (s *Server) Restart() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command(s.bin,
		"--bind", "127.0.0.1", "--port", port, "--dir", s.Dir,
		"--appendonly", "yes", "--appendfsync", s.Fsync, "--save", "",
		"--protected-mode", "no", "--logfile", filepath.Join(s.Dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) {
		_ = cmd.Wait()
		close(exit)
	}(s.cmd, s.exit)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return nil
		}
		select {
		case <-s.exit:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			return fmt.Errorf("redis-server exited at start: %s", tail(string(log)))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within 15s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: what the test wants to survive is a
// crash) and waits for it to exit. Safe to call when stopped.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exit:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
}

// ping sends PING in the protocol's inline form and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// Port returns the server's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
