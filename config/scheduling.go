package config

// SchedulingConfig chooses the dispatch policy and the queue's limits.
type SchedulingConfig struct {
	Policy         string `koanf:"policy"`           // batch (default) | fifo
	MaxWaitSeconds int    `koanf:"max_wait_seconds"` // 30
	MaxQueue       int    `koanf:"max_queue"`        // 10000
	MaxAttempts    int    `koanf:"max_attempts"`     // 3
	AgingSeconds   int    `koanf:"aging_seconds"`    // 60: +1 priority per 60 s waited; 0 off
	// InteractivePriority is the queue priority of each request to the
	// OpenAI-compatible routes (-100..100, higher first); default 10.
	InteractivePriority int `koanf:"interactive_priority"`
	// BatchPriority is the queue priority of each line of an OpenAI batch;
	// default -10, so interactive requests and ordinary jobs go first.
	BatchPriority int `koanf:"batch_priority"`
}

// validateScheduling checks scheduling.*.
func validateScheduling(p *problems, sc SchedulingConfig) {
	p.oneOf("scheduling.policy", sc.Policy, "batch", "fifo")
	p.atLeast("scheduling.max_wait_seconds", sc.MaxWaitSeconds, 0)
	p.atLeast("scheduling.aging_seconds", sc.AgingSeconds, 0)
	p.atLeast("scheduling.max_queue", sc.MaxQueue, 1)
	p.between("scheduling.max_attempts", sc.MaxAttempts, 1, 100)
	p.between("scheduling.interactive_priority", sc.InteractivePriority, -100, 100)
	p.between("scheduling.batch_priority", sc.BatchPriority, -100, 100)
}
