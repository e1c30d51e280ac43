package runner

import "testing"

// The kernel offers a closed probe port again soon enough that 1,000 draws
// collide; freePort never gives a port to two live engines.
func TestFreePort_NeverHandsOutALivePortTwice(t *testing.T) {
	seen := map[int]bool{}
	t.Cleanup(func() {
		for port := range seen {
			releasePort(port)
		}
	})
	for range 1000 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice while its engine lives", port)
		}
		seen[port] = true
	}
	for port := range seen {
		releasePort(port)
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for port := range seen {
		if handedOut.ports[port] {
			t.Fatalf("port %d still handed out after its release", port)
		}
	}
}
