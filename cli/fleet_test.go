package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/scheduler"
)

func TestPrintFleet(t *testing.T) {
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	h := wire.Health{Node: "a", Fleet: []wire.Node{
		{Node: "a", Seen: now.Add(-time.Second), GPUs: []scheduler.DeviceStatus{{Index: 0, BudgetMB: 6000, ReservedMB: 3000}}, Loaded: []string{"m0"}, QueueDepth: 4, Running: 2},
		{Node: "b", Seen: now.Add(-2 * time.Second), GPUs: []scheduler.DeviceStatus{{Index: 0, BudgetMB: 9000}, {Index: 1, BudgetMB: 9000, ReservedMB: 6000}}, Loaded: []string{"m1", "m2"}},
	}}
	var b strings.Builder
	printFleet(&b, h, now)
	out := b.String()
	for _, want := range []string{"this node: a", "a     0:6000 MiB", "3000/6000 MiB   m0", "0:9000 MiB 1:9000 MiB  6000/18000 MiB  m1,m2"} {
		if !strings.Contains(out, want) {
			t.Errorf("fleet table lacks %q:\n%s", want, out)
		}
	}
}
