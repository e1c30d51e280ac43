package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
)

// staleBeat is how old the scheduler loop's heartbeat may be before /health
// reports degraded.
const staleBeat = 5 * time.Second

// healthView is the JSON of GET /health.
type healthView struct {
	Status        string   `json:"status"` // healthy | degraded
	Reason        string   `json:"reason,omitempty"`
	Version       string   `json:"version,omitempty"`
	UptimeSeconds float64  `json:"uptime_seconds"`
	VRAMSource    string   `json:"vram_source"`
	VRAMTotalMB   int      `json:"vram_total_mb"`
	VRAMBudgetMB  int      `json:"vram_budget_mb"`
	VRAMReserved  int      `json:"vram_reserved_mb"`
	VRAMFreeMB    int      `json:"vram_free_mb"`
	VRAMNotOurs   int      `json:"vram_not_ours_mb"`
	LoadedModels  []string `json:"loaded_models"`
	QueueDepth    int      `json:"queue_depth"`
	Running       int      `json:"running"`
	Policy        string   `json:"policy"`
	HeldWrites    int      `json:"held_writes"` // finished jobs whose outcome the store has not taken yet
	// Devices are the GPUs, each with its own ledger (the figures above
	// are their sums).
	Devices []scheduler.DeviceStatus `json:"devices"`
	// Node and Fleet: the nodes sharing the queue (storage.backend redis).
	Node  string `json:"node,omitempty"`
	Fleet any    `json:"fleet,omitempty"`
	// ConfigError is why the last config reload was rejected (the running
	// config stays in force); absent once a reload is applied.
	ConfigError string `json:"config_error,omitempty"`
}

// health handles GET /health: 200 healthy, 503 degraded.
func (s *Server) health(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	now := s.now()
	v := healthView{Status: "healthy", Version: s.cfg.Version, UptimeSeconds: now.Sub(s.started).Seconds(), LoadedModels: []string{}}
	snap, err := s.sched.Snapshot(ctx)
	if err != nil {
		v.Status, v.Reason = "degraded", "scheduler not answering: "+err.Error()
		return c.JSON(http.StatusServiceUnavailable, v)
	}
	if age := now.Sub(s.sched.LastBeat()); age > staleBeat {
		v.Status, v.Reason = "degraded", fmt.Sprintf("scheduler loop last ran %s ago", age.Round(time.Second))
	}
	v.VRAMSource, v.VRAMTotalMB, v.VRAMBudgetMB = snap.VRAMSource, snap.TotalMB, snap.BudgetMB
	v.VRAMReserved, v.VRAMFreeMB, v.VRAMNotOurs = snap.ReservedMB, snap.FreeMB, snap.NotOursMB
	v.LoadedModels, v.QueueDepth, v.Running, v.Policy = snap.Loaded(), snap.QueueDepth, snap.Running, snap.Policy
	v.Devices = snap.Devices
	if v.HeldWrites = snap.HeldWrites; snap.StoreDegraded != "" {
		v.Status, v.Reason = "degraded", snap.StoreDegraded
	}
	if s.cfg.FleetFunc != nil {
		v.Node, v.Fleet = s.cfg.Node, s.cfg.FleetFunc(ctx)
	}
	if s.cfg.ConfigError != nil {
		v.ConfigError = s.cfg.ConfigError()
	}
	for _, d := range snap.Devices {
		if d.Lost != "" {
			v.Status, v.Reason = "degraded", "GPU "+d.ID+" lost: "+d.Lost
		}
	}
	code := http.StatusOK
	if v.Status != "healthy" {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, v)
}

// models handles GET /models.
func (s *Server) models(c echo.Context) error {
	snap, err := s.sched.Snapshot(c.Request().Context())
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if snap.Models == nil {
		snap.Models = []scheduler.ModelStatus{}
	}
	return c.JSON(http.StatusOK, map[string]any{
		"models": snap.Models, "vram_budget_mb": snap.BudgetMB, "vram_reserved_mb": snap.ReservedMB, "vram_free_mb": snap.FreeMB,
		"devices": snap.Devices,
	})
}
