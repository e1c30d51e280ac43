package runner

import (
	"strings"
	"testing"
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
	if l := <-lines; l != "d" {
		t.Fatalf("followed %q, want d", l)
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
