package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vramcram/vramcram/api/wire"
)

// printFleetOf prints the fleet table under `vramcram ps` when the daemon
// is part of a fleet; on one machine it prints nothing.
func printFleetOf(ctx context.Context, c *client, now time.Time) {
	var h wire.Health
	if _, err := c.getJSON(ctx, "/health", &h); err != nil || len(h.Fleet) == 0 {
		return
	}
	printFleet(c.stdout, h, now)
}

// printFleet writes one line per live node: its GPUs with their budgets and
// its loaded models.
func printFleet(w io.Writer, h wire.Health, now time.Time) {
	fmt.Fprintf(w, "\nFleet (this node: %s):\n", h.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGPUS\tRESERVED\tLOADED\tQUEUED\tRUNNING\tSEEN")
	for _, n := range h.Fleet {
		var gpus []string
		reserved, budget := 0, 0
		for _, g := range n.GPUs {
			gpus = append(gpus, fmt.Sprintf("%d:%s", g.Index, mib(g.BudgetMB)))
			reserved += g.ReservedMB
			budget += g.BudgetMB
		}
		loaded := strings.Join(n.Loaded, ",")
		if loaded == "" {
			loaded = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d MiB\t%s\t%d\t%d\t%s ago\n", n.Node, strings.Join(gpus, " "), reserved, budget,
			loaded, n.QueueDepth, n.Running, ago(now.Sub(n.Seen)))
	}
	tw.Flush()
}
