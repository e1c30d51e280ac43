package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/vramcram/vramcram/api/wire"
)

// staleBeat is how old the scheduler loop's heartbeat may be before /health
// reports degraded.
const staleBeat = 5 * time.Second

// health handles GET /health: 200 healthy, 503 degraded. It needs no key
// (probes use it); where API keys are set, a request without one gets the
// status alone, not the models, GPUs, fleet addresses or config errors.
func (s *Server) health(c echo.Context) error {
	v, code := s.healthView(c)
	if len(s.cfg.APIKeys) > 0 && !s.hasKey(c.Request()) {
		return c.JSON(code, map[string]string{"status": v.Status})
	}
	return c.JSON(code, v)
}

func (s *Server) healthView(c echo.Context) (wire.Health, int) {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	now := s.now()
	v := wire.Health{Status: "healthy", Version: s.cfg.Version, UptimeSeconds: now.Sub(s.started).Seconds(), LoadedModels: []string{}}
	snap, err := s.sched.Snapshot(ctx)
	if err != nil {
		v.Status, v.Reason = "degraded", "scheduler not answering: "+err.Error()
		return v, http.StatusServiceUnavailable
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
		v.Node = s.cfg.Node
		if nodes, err := s.cfg.FleetFunc(ctx); err != nil {
			v.FleetError = err.Error()
		} else {
			v.Fleet = nodes
		}
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
	return v, code
}

// models handles GET /models.
func (s *Server) models(c echo.Context) error {
	snap, err := s.sched.Snapshot(c.Request().Context())
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if snap.Models == nil {
		snap.Models = []wire.Model{}
	}
	return c.JSON(http.StatusOK, wire.ModelList{
		Models: snap.Models, BudgetMB: snap.BudgetMB, ReservedMB: snap.ReservedMB, FreeMB: snap.FreeMB,
		Devices: snap.Devices,
	})
}
