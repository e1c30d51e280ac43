package config

import "fmt"

// Upper bounds of the duration keys. Ten years is far beyond any sensible
// value, and far below what overflows a time.Duration (292 years): a larger
// number wraps to a negative or tiny duration (retention_hours: 99999999
// made every finished job "older than the cut-off" and deleted it).
const (
	maxSeconds = 10 * 365 * 24 * 3600
	maxHours   = 10 * 365 * 24
)

// validateDurations bounds every duration key from above, naming its path.
// The sections check the lower bounds.
func validateDurations(p *problems, c *Config) {
	below := func(key string, v, hi int) {
		if v > hi {
			p.addf("%s: must be at most %d (ten years), got %d", key, hi, v)
		}
	}
	below("storage.retention_hours", c.Storage.RetentionHours, maxHours)
	for _, d := range []struct {
		key string
		v   int
	}{
		{"storage.redis.lease_seconds", c.Storage.Redis.LeaseSeconds},
		{"server.body_idle_timeout_seconds", c.Server.BodyIdleTimeoutSeconds},
		{"vram.monitoring_interval_seconds", c.VRAM.MonitoringIntervalSeconds},
		{"vram.release_timeout_seconds", c.VRAM.ReleaseTimeoutSeconds},
		{"scheduling.max_wait_seconds", c.Scheduling.MaxWaitSeconds},
		{"scheduling.aging_seconds", c.Scheduling.AgingSeconds},
		{"agents.heartbeat_interval_seconds", c.Agents.HeartbeatIntervalSeconds},
		{"agents.heartbeat_timeout_seconds", c.Agents.HeartbeatTimeoutSeconds},
		{"agents.worker_ready_timeout_seconds", c.Agents.WorkerReadyTimeoutSeconds},
		{"agents.graceful_shutdown_timeout_seconds", c.Agents.GracefulShutdownTimeoutSeconds},
		{"agents.stop_grace_seconds", c.Agents.StopGraceSeconds},
	} {
		below(d.key, d.v, maxSeconds)
	}
	for k, m := range c.Models.LLM {
		below(fmt.Sprintf("models.llm[%d].ttl_seconds", k), m.TTLSeconds, maxSeconds)
	}
	for k, m := range c.Models.Diffusion {
		below(fmt.Sprintf("models.diffusion[%d].ttl_seconds", k), m.TTLSeconds, maxSeconds)
		below(fmt.Sprintf("models.diffusion[%d].config.timeout_seconds", k), m.Config.TimeoutSeconds, maxSeconds)
	}
}
