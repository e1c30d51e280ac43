package main

import (
	"log/slog"

	"github.com/vramcram/vramcram/api/logring"
)

// daemonLogLines is how many of the daemon's log lines GET /logs/stream
// can show from before it was asked.
const daemonLogLines = 2000

// daemonLogs keeps the daemon's recent log lines (at the configured
// logging.level) for GET /logs/stream.
var daemonLogs = logring.New(daemonLogLines)

// teeLogs returns log writing each record into daemonLogs as well.
func teeLogs(log *slog.Logger) *slog.Logger {
	return slog.New(logring.Tee(log.Handler(), daemonLogs))
}
