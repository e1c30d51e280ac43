package config

// LoggingConfig configures slog.
type LoggingConfig struct {
	Level  string `koanf:"level"`  // debug|info|warn|error, default info
	Format string `koanf:"format"` // auto (tint on a terminal, JSON otherwise) | text | json; default auto
}

// validateLogging checks logging.*.
func validateLogging(p *problems, l LoggingConfig) {
	p.oneOf("logging.level", l.Level, "debug", "info", "warn", "error")
	p.oneOf("logging.format", l.Format, "auto", "text", "json")
}
