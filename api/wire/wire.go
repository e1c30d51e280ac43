// Package wire is the one definition of the JSON that VramCram's own API
// speaks (jobs, models, health, the fleet, batches). The API writes these
// types and the client commands read them, so the two cannot drift apart.
// The shapes the scheduler and the store already own are named here by
// alias; the OpenAI, Anthropic and Ollama doors keep their own shapes in api.
package wire

import (
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// Job is the JSON of GET /jobs/{id} and of each entry of GET /jobs.
type Job struct {
	JobID         string     `json:"job_id"`
	Status        string     `json:"status"`
	Model         string     `json:"model"`
	Type          string     `json:"type"`
	Endpoint      string     `json:"endpoint,omitempty"` // a durable OpenAI request's path
	Priority      int        `json:"priority"`
	Attempts      int        `json:"attempts"`
	MaxAttempts   int        `json:"max_attempts"`
	Error         string     `json:"error,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	QueuePosition *int       `json:"queue_position,omitempty"`
	// ETASeconds estimates when a queued job will be done, from the model's
	// recent job and load times; absent until the model has finished a job.
	ETASeconds *float64  `json:"eta_seconds,omitempty"`
	Progress   *Progress `json:"progress,omitempty"`
}

// Final reports whether the job has reached a state it never leaves.
func (j Job) Final() bool { return store.JobState(j.Status).Final() }

// Progress is how far a running job is: tokens, or sampling steps.
type Progress = engine.Progress

// Model is one model of GET /models, as the scheduler reports it.
type Model = scheduler.ModelStatus

// Device is one GPU of GET /models and GET /health.
type Device = scheduler.DeviceStatus

// Placement is where a running model sits, per GPU.
type Placement = scheduler.Placement

// ModelList is the JSON of GET /models.
type ModelList struct {
	Models     []Model  `json:"models"`
	BudgetMB   int      `json:"vram_budget_mb"`
	ReservedMB int      `json:"vram_reserved_mb"`
	FreeMB     int      `json:"vram_free_mb"`
	Devices    []Device `json:"devices"`
}

// Health is the JSON of GET /health: 200 healthy, 503 degraded.
type Health struct {
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
	Devices []Device `json:"devices"`
	// Node and Fleet: the nodes sharing the queue (storage.backend redis);
	// FleetError says why the fleet could not be read.
	Node       string `json:"node,omitempty"`
	Fleet      []Node `json:"fleet,omitempty"`
	FleetError string `json:"fleet_error,omitempty"`
	// ConfigError is why the last config reload was rejected (the running
	// config stays in force); absent once a reload is applied.
	ConfigError string `json:"config_error,omitempty"`
}

// Node is one live member of a fleet, as its heartbeat describes it.
type Node struct {
	Node       string    `json:"node"`
	URL        string    `json:"url"`
	Seen       time.Time `json:"seen"`
	GPUs       []Device  `json:"gpus"`
	BudgetMB   int       `json:"vram_budget_mb"`
	Loaded     []string  `json:"loaded_models"`
	Loading    []string  `json:"loading_models,omitempty"`
	Fits       []string  `json:"fits_models"`
	QueueDepth int       `json:"queue_depth"`
	Running    int       `json:"running"`
}

// Batch is a batch in OpenAI's shape (GET /v1/batches/{id}).
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Errors           *BatchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           store.BatchStatus `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    store.BatchCounts `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

// BatchErrors lists the lines of a batch's input file that were refused.
type BatchErrors struct {
	Object string             `json:"object"`
	Data   []store.BatchError `json:"data"`
}

// Final reports whether the batch has reached a state it never leaves.
func (b Batch) Final() bool { return b.Status.Final() }

// OutputFile is the id of the output file, "" until there is one.
func (b Batch) OutputFile() string { return deref(b.OutputFileID) }

// ErrorFile is the id of the error file, "" until there is one.
func (b Batch) ErrorFile() string { return deref(b.ErrorFileID) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Accepted is the answer to POST /jobs (202).
type Accepted struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
}

// Cancelled is the answer to DELETE /jobs/{id}.
type Cancelled struct {
	JobID          string `json:"job_id"`
	Status         string `json:"status"`
	PreviousStatus string `json:"previous_status"`
}
