package runner

import (
	"strings"
	"testing"
	"time"
)

func TestProcess_FollowOutput(t *testing.T) {
	p := &Process{ring: newRing(2)}
	p.ring.add("a")
	p.ring.add("b")
	p.ring.add("c")
	recent, lines, stop := p.FollowOutput(1)
	if strings.Join(recent, ",") != "b,c" {
		t.Fatalf("recent %v, want b,c", recent)
	}
	p.ring.add("d")
	p.ring.add("e") // the follower's buffer is full: lost, the output goes on
	select {
	case l := <-lines:
		if l != "d" {
			t.Fatalf("followed %q, want d", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no line followed")
	}
	stop()
	p.ring.add("f")
	select {
	case l := <-lines:
		t.Fatalf("line %q after stop", l)
	default:
	}
	if got := strings.Join(p.Tail(), ","); got != "e,f" {
		t.Fatalf("tail %s, want e,f", got)
	}
}
