package logring

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRing_KeepsLastAndFollows(t *testing.T) {
	r := New(3)
	for i := range 5 {
		r.Add(fmt.Sprint(i))
	}
	recent, f := r.Follow(1)
	defer f.Close()
	if strings.Join(recent, ",") != "2,3,4" {
		t.Fatalf("recent %v, want the last three, oldest first", recent)
	}
	r.Add("5")
	r.Add("6") // the follower's buffer of 1 is full: dropped
	if got := <-f.C; got != "5" {
		t.Fatalf("followed %q, want 5", got)
	}
	if f.Dropped() != 1 {
		t.Fatalf("dropped %d, want 1", f.Dropped())
	}
	f.Close()
	f.Close()
	r.Add("7") // no panic on a closed follower
	if strings.Join(r.Lines(), ",") != "5,6,7" {
		t.Fatalf("lines %v", r.Lines())
	}
}

func TestTee_WritesEnabledRecordsAsLines(t *testing.T) {
	r := New(10)
	var out strings.Builder
	inner := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})
	log := slog.New(Tee(inner, r)).With("component", "scheduler")
	log.Debug("hidden")
	log.Info("model ready", "model", "alpha")
	lines := r.Lines()
	if len(lines) != 1 || !strings.Contains(lines[0], `msg="model ready"`) || !strings.Contains(lines[0], "component=scheduler model=alpha") {
		t.Fatalf("ring lines %q", lines)
	}
	if !strings.Contains(out.String(), `"msg":"model ready"`) || strings.Contains(out.String(), "hidden") {
		t.Fatalf("inner handler got %q", out.String())
	}
}
