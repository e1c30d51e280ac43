package runner

import (
	"errors"
	"net"
	"sync"
)

// handedOut are the loopback ports given to engines of this process that
// have not been reaped yet. freePort never hands one out twice: the kernel
// may offer a port again once its probe listener is closed, before the
// first engine binds it, and sd-server binds with SO_REUSEPORT, so a second
// engine would share the port silently instead of failing to bind.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePortTries bounds the kernel offers of ports already handed out.
const freePortTries = 32

// freePort asks the kernel for a free loopback port that no live engine of
// ours was given, and records it as handed out until releasePort. Another
// process may still take it before the engine binds it; the supervisor
// respawns on a new port when that happens.
func freePort() (int, error) {
	for range freePortTries {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		handedOut.Lock()
		fresh := !handedOut.ports[port]
		if fresh {
			handedOut.ports[port] = true
		}
		handedOut.Unlock()
		if fresh {
			return port, nil
		}
	}
	return 0, errors.New("the kernel offered only ports already given to running engines")
}

// releasePort makes port available again (0: none was taken).
func releasePort(port int) {
	handedOut.Lock()
	delete(handedOut.ports, port)
	handedOut.Unlock()
}
