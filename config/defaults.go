package config

// Default returns the configuration used where neither the file nor the
// environment sets a key. Models get their per-model defaults when they are
// decoded (see LLMModel.setDefaults and DiffusionModel.setDefaults).
func Default() Config {
	return Config{
		Server: ServerConfig{
			Host:           "127.0.0.1",
			Port:           8000,
			MetricsPort:    9090,
			MaxBodyBytes:   1 << 20,
			MaxPromptChars: 100000,

			BodyIdleTimeoutSeconds: 30,
			MaxConnections:         1024,
			MaxInflightBodyMB:      256,
			MaxEventClients:        256,
		},
		Storage: StorageConfig{
			DataDir:        "./data",
			RetentionHours: 168,
			MaxFileMB:      200,
			Backend:        "bbolt",
			Redis:          RedisConfig{URL: "redis://127.0.0.1:6379/0", LeaseSeconds: 30},
		},
		VRAM: VRAMConfig{
			TotalMB:                   24576,
			SafetyMarginMB:            1024,
			MonitoringIntervalSeconds: 5,
			ReleaseTimeoutSeconds:     10,
		},
		Inference: InferenceConfig{
			LlamaServerPath: "llama-server",
			SDPath:          "sd-cli",
			SDServerPath:    "sd-server",
		},
		Agents: AgentsConfig{
			HeartbeatIntervalSeconds:       10,
			HeartbeatTimeoutSeconds:        30,
			WorkerReadyTimeoutSeconds:      60,
			GracefulShutdownTimeoutSeconds: 300,
			StopGraceSeconds:               10,
		},
		Scheduling: SchedulingConfig{
			Policy:         "batch",
			MaxWaitSeconds: 30,
			AgingSeconds:   60,
			MaxQueue:       10000,
			MaxAttempts:    3,

			InteractivePriority: 10,
			BatchPriority:       -10,
		},
		Logging: LoggingConfig{
			Level:  "info",
			Format: "auto",
		},
	}
}
