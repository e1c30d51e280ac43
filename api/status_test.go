package api_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/scheduler"
)

func testSnapshot() scheduler.Snapshot {
	used := time.Date(2026, 8, 1, 11, 0, 0, 0, time.UTC)
	return scheduler.Snapshot{
		Policy: "batch", VRAMSource: "nvml", TotalMB: 24576, BudgetMB: 23552,
		ReservedMB: 14336, NotOursMB: 512, FreeMB: 8704, QueueDepth: 3, Running: 2,
		Models: []scheduler.ModelStatus{
			{Name: "qwen", Type: "llm", State: scheduler.ModelBusy, VRAMMB: 6144, ReservedMB: 6144, Slots: 2, Running: 2, PID: 4242, LastUsed: &used},
			{Name: "llama", Type: "llm", State: scheduler.ModelReady, VRAMMB: 8192, ReservedMB: 8192, Slots: 1, Queued: 3, Pinned: true},
			{Name: "sd", Type: "diffusion", State: scheduler.ModelLoading, VRAMMB: 8192},
			{Name: "old", Type: "llm", State: scheduler.ModelUnloaded},
		},
	}
}

// healthJSON is GET /health as a client reads it.
type healthJSON = wire.Health

func TestHealth(t *testing.T) {
	t.Parallel()

	t.Run("Healthy", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) { return testSnapshot(), nil }
		b.clock.Advance(90 * time.Second)
		rec := b.do(t, http.MethodGet, "/health", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		var h healthJSON
		decodeJSON(t, rec, &h)
		want := healthJSON{
			Status: "healthy", Version: "v-test", UptimeSeconds: 90, VRAMSource: "nvml",
			VRAMTotalMB: 24576, VRAMBudgetMB: 23552, VRAMReserved: 14336, VRAMFreeMB: 8704, VRAMNotOurs: 512,
			LoadedModels: []string{"llama", "qwen"}, QueueDepth: 3, Running: 2, Policy: "batch",
		}
		if !reflect.DeepEqual(h, want) {
			t.Errorf("health\n got %+v\nwant %+v", h, want)
		}
		if _, ok := keys(t, rec.Body.Bytes())["reason"]; ok {
			t.Error("healthy response has a reason")
		}
	})

	t.Run("NothingLoaded", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec := b.do(t, http.MethodGet, "/health", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		if got := string(keys(t, rec.Body.Bytes())["loaded_models"]); got != "[]" {
			t.Errorf("loaded_models %s, want []", got)
		}
	})

	t.Run("StaleBeat", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) { return testSnapshot(), nil }
		beat := b.clock.Now()
		b.sched.LastBeatFunc = func() time.Time { return beat }
		b.clock.Advance(10 * time.Second)
		rec := b.do(t, http.MethodGet, "/health", "")
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		var h healthJSON
		decodeJSON(t, rec, &h)
		if h.Status != "degraded" || h.Reason == "" || h.VRAMFreeMB != 8704 || !slices.Equal(h.LoadedModels, []string{"llama", "qwen"}) {
			t.Errorf("health %+v", h)
		}
	})

	t.Run("FreshBeatAtLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		beat := b.clock.Now()
		b.sched.LastBeatFunc = func() time.Time { return beat }
		b.clock.Advance(5 * time.Second)
		if rec := b.do(t, http.MethodGet, "/health", ""); rec.Code != http.StatusOK {
			t.Errorf("status %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("SchedulerNotAnswering", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) { return scheduler.Snapshot{}, scheduler.ErrStopped }
		rec := b.do(t, http.MethodGet, "/health", "")
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		var h healthJSON
		decodeJSON(t, rec, &h)
		if h.Status != "degraded" || h.Reason == "" || h.LoadedModels == nil {
			t.Errorf("health %+v", h)
		}
	})
}

func TestModels(t *testing.T) {
	t.Parallel()

	t.Run("Shape", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) { return testSnapshot(), nil }
		rec := b.do(t, http.MethodGet, "/models", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		var out struct {
			Models     []map[string]any `json:"models"`
			BudgetMB   *int             `json:"vram_budget_mb"`
			ReservedMB *int             `json:"vram_reserved_mb"`
			FreeMB     *int             `json:"vram_free_mb"`
		}
		decodeJSON(t, rec, &out)
		if out.BudgetMB == nil || *out.BudgetMB != 23552 || out.ReservedMB == nil || *out.ReservedMB != 14336 || out.FreeMB == nil || *out.FreeMB != 8704 {
			t.Errorf("figures %s", rec.Body)
		}
		if len(out.Models) != 4 {
			t.Fatalf("models %s", rec.Body)
		}
		q := out.Models[0]
		for k, want := range map[string]any{
			"name": "qwen", "type": "llm", "state": "busy", "vram_mb": 6144.0, "vram_reserved_mb": 6144.0,
			"pinned": false, "slots": 2.0, "running": 2.0, "queued": 0.0, "pid": 4242.0, "last_used": "2026-08-01T11:00:00Z",
		} {
			if q[k] != want {
				t.Errorf("models[0].%s = %v, want %v", k, q[k], want)
			}
		}
		if v, ok := out.Models[3]["last_used"]; !ok || v != nil {
			t.Errorf("unused model: last_used %v (present %t), want null", v, ok)
		}
	})

	t.Run("NoModels", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec := b.do(t, http.MethodGet, "/models", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d %s", rec.Code, rec.Body)
		}
		if got := string(keys(t, rec.Body.Bytes())["models"]); got != "[]" {
			t.Errorf("models %s, want []", got)
		}
	})

	t.Run("SchedulerStopped", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) {
			return scheduler.Snapshot{}, errors.New("snapshot: secret")
		}
		e := wantError(t, b.do(t, http.MethodGet, "/models", ""), http.StatusInternalServerError, api.CodeInternal)
		if strings.Contains(e.Error.Message, "secret") {
			t.Errorf("message %q", e.Error.Message)
		}
	})
}
