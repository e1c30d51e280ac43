package config

// InferenceConfig holds the engine binaries' paths (looked up in PATH when
// they contain no slash).
type InferenceConfig struct {
	LlamaServerPath string `koanf:"llama_server_path"` // default llama-server
	SDPath          string `koanf:"sd_path"`           // default sd-cli
	SDServerPath    string `koanf:"sd_server_path"`    // default sd-server
}

// AgentsConfig times the engine children: heartbeats, readiness, shutdown.
type AgentsConfig struct {
	HeartbeatIntervalSeconds       int `koanf:"heartbeat_interval_seconds"`        // 10
	HeartbeatTimeoutSeconds        int `koanf:"heartbeat_timeout_seconds"`         // 30
	WorkerReadyTimeoutSeconds      int `koanf:"worker_ready_timeout_seconds"`      // 60
	GracefulShutdownTimeoutSeconds int `koanf:"graceful_shutdown_timeout_seconds"` // 300
	StopGraceSeconds               int `koanf:"stop_grace_seconds"`                // 10: SIGTERM → SIGKILL grace for one engine
}

// validateProcesses checks inference.* and agents.*.
func validateProcesses(p *problems, in InferenceConfig, a AgentsConfig) {
	for _, f := range []struct{ key, val string }{
		{"inference.llama_server_path", in.LlamaServerPath},
		{"inference.sd_path", in.SDPath},
		{"inference.sd_server_path", in.SDServerPath},
	} {
		if f.val == "" {
			p.addf("%s: must not be empty", f.key)
		}
	}

	p.atLeast("agents.heartbeat_interval_seconds", a.HeartbeatIntervalSeconds, 1)
	p.atLeast("agents.heartbeat_timeout_seconds", a.HeartbeatTimeoutSeconds, 1)
	p.atLeast("agents.worker_ready_timeout_seconds", a.WorkerReadyTimeoutSeconds, 1)
	p.atLeast("agents.graceful_shutdown_timeout_seconds", a.GracefulShutdownTimeoutSeconds, 1)
	p.atLeast("agents.stop_grace_seconds", a.StopGraceSeconds, 1)
	if a.HeartbeatIntervalSeconds >= 1 && a.HeartbeatTimeoutSeconds >= 1 && a.HeartbeatTimeoutSeconds < a.HeartbeatIntervalSeconds {
		p.addf("agents.heartbeat_timeout_seconds: %d is shorter than agents.heartbeat_interval_seconds (%d)", a.HeartbeatTimeoutSeconds, a.HeartbeatIntervalSeconds)
	}
}
