package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vramcram/vramcram/api/wire"
)

func (c *client) models(ctx context.Context) (wire.ModelList, []byte, error) {
	var l wire.ModelList
	b, err := c.getJSON(ctx, "/models", &l)
	return l, b, err
}

// loaded reports whether the state is one of a running engine.
func loaded(state string) bool {
	switch state {
	case "loading", "ready", "busy", "draining", "stopping":
		return true
	}
	return false
}

func mib(n int) string { return fmt.Sprintf("%d MiB", n) }

func psCmd(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
	if err := showModels(ctx, c, "ps", args, printPS); err != nil || c.json {
		return err
	}
	printFleetOf(ctx, c, time.Now())
	return nil
}

func modelsCmd(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
	return showModels(ctx, c, "models", args, printModels)
}

// showModels reads GET /models and prints it with print (or as JSON).
func showModels(ctx context.Context, c *client, cmd string, args []string, print func(io.Writer, wire.ModelList, time.Time)) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments", cmd)
	}
	l, raw, err := c.models(ctx)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	print(c.stdout, l, time.Now())
	return nil
}

// printPS writes the loaded models as a table, like ollama ps.
func printPS(w io.Writer, l wire.ModelList, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGPU\tRESERVED\tMEASURED\tSLOTS BUSY\tTOK/S\tIDLE\tLOADED\tPID")
	n := 0
	for _, m := range l.Models {
		if !loaded(m.State) {
			continue
		}
		n++
		measured := "-"
		if m.MeasuredMB > 0 {
			measured = mib(m.MeasuredMB)
		}
		idle := "-"
		if m.Running == 0 && m.LastUsed != nil && m.State != "loading" {
			idle = ago(now.Sub(*m.LastUsed))
		}
		since := "-"
		if m.LoadedAt != nil {
			since = ago(now.Sub(*m.LoadedAt)) + " ago"
		}
		pid := "-"
		if m.PID > 0 {
			pid = fmt.Sprint(m.PID)
		}
		name := m.Name
		if m.Pinned {
			name += " (pinned)"
		}
		gpus := []string{}
		for _, p := range m.Placement {
			gpus = append(gpus, fmt.Sprint(p.Device))
		}
		gpu := strings.Join(gpus, "+")
		if gpu == "" {
			gpu = "-"
		}
		tps := "-"
		if m.TokensPerSecond > 0 {
			tps = fmt.Sprintf("%.1f", m.TokensPerSecond)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", name, m.State, gpu, mib(m.ReservedMB), measured,
			m.Running, m.Slots, tps, idle, since, pid)
	}
	tw.Flush()
	if n == 0 {
		fmt.Fprintln(w, "(no model loaded)")
	}
	fmt.Fprintf(w, "\nVRAM: %d of %d MiB budget reserved, %d MiB free\n", l.ReservedMB, l.BudgetMB, l.FreeMB)
	if len(l.Devices) > 1 {
		for _, d := range l.Devices {
			line := fmt.Sprintf("  GPU %d (%s): %d of %d MiB reserved, %d MiB not ours, %d MiB free", d.Index, d.ID, d.ReservedMB, d.BudgetMB, d.NotOursMB, d.FreeMB)
			if d.Lost != "" {
				line += " — LOST: " + d.Lost
			}
			fmt.Fprintln(w, line)
		}
	}
}

// printModels writes every configured model as a table.
func printModels(w io.Writer, l wire.ModelList, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tSTATE\tVRAM\tQUEUED\tRUNNING\tLAST USED\tREASON")
	for _, m := range l.Models {
		vram := "whole budget"
		switch {
		case m.VRAMMB > 0:
			vram = mib(m.VRAMMB)
		case m.EstimateMB > 0:
			vram = "~" + mib(m.EstimateMB) + " (estimate)"
		}
		used := "never"
		if m.LastUsed != nil {
			used = ago(now.Sub(*m.LastUsed)) + " ago"
		}
		reason := m.Reason
		if len(reason) > 100 {
			reason = reason[:100] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", m.Name, m.Type, m.State, vram, m.Queued, m.Running, used, reason)
	}
	tw.Flush()
}

// loadPoll is how often load/unload --wait read the model's state.
const loadPoll = 250 * time.Millisecond

func loadCommand(load bool) *clientCommand {
	action, help := "unload", "drain a model (running jobs finish) and stop its engine"
	if load {
		action, help = "load", "load a model now (it waits for room if busy models hold the VRAM)"
	}
	var wait bool
	var timeout time.Duration
	return &clientCommand{
		usage: "NAME",
		help:  help,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&wait, "wait", false, "wait until the model is "+map[bool]string{true: "ready", false: "unloaded"}[load])
			fs.DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long; 0 = no limit")
		},
		run: func(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
			name, err := oneArg(args, "the model name")
			if err != nil {
				return err
			}
			b, err := c.do(ctx, http.MethodPost, "/models/"+url.PathEscape(name)+"/"+action, nil)
			if err != nil {
				return err
			}
			if c.json && !wait {
				c.printJSON(b)
				return nil
			}
			if !wait {
				fmt.Fprintf(c.stdout, "%s of %s requested\n", action, name)
				return nil
			}
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return c.waitModel(ctx, name, load)
		},
	}
}

// waitModel polls /models until name is ready (load) or unloaded (unload).
// A load fails when the model becomes unavailable, or failed after it was
// seen loading.
func (c *client) waitModel(ctx context.Context, name string, load bool) error {
	sawLoading := false
	for {
		l, _, err := c.models(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("stopped waiting for %s: %w", name, ctx.Err())
			}
			return err
		}
		m, ok := findModel(l, name)
		if !ok {
			return fmt.Errorf("model %s is not in GET /models", name)
		}
		sawLoading = sawLoading || m.State == "loading"
		switch {
		case load && (m.State == "ready" || m.State == "busy"):
			fmt.Fprintf(c.stdout, "%s is %s (%s reserved)\n", name, m.State, mib(m.ReservedMB))
			return nil
		case load && m.State == "unavailable", load && m.State == "failed" && sawLoading:
			return fmt.Errorf("model %s is %s: %s", name, m.State, m.Reason)
		case !load && m.State == "unloaded":
			fmt.Fprintf(c.stdout, "%s is unloaded\n", name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for %s (still %s): %w", name, m.State, ctx.Err())
		case <-time.After(loadPoll):
		}
	}
}

func findModel(l wire.ModelList, name string) (wire.Model, bool) {
	for _, m := range l.Models {
		if m.Name == name {
			return m, true
		}
	}
	return wire.Model{}, false
}
