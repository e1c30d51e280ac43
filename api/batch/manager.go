// Package batch runs OpenAI batches: uploaded JSONL files whose request
// lines become durable jobs at a low priority, and output files in OpenAI's
// line shape derived from those jobs once they are all done.
//
// One goroutine (Manager.Run) advances every batch; the HTTP API only
// creates records, asks for a cancel and reads. Each step is a bbolt
// transaction that leaves the batch in a state the loop can resume from,
// so a crash at any point loses nothing and repeats nothing:
//
//   - Lines are enqueued in chunks, each chunk's jobs written in the same
//     transaction as the batch's cursor (line count and byte offset).
//   - Line k is job BatchJobID(batch, k): a line can only ever be one job,
//     however often the daemon restarts while it runs.
//   - The output and error files are written from the jobs' records at the
//     end, then recorded with the final status in one transaction: a crash
//     before that commit just writes them again.
package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// Store is what the manager needs of the job store.
type Store interface {
	PutFile(ctx context.Context, f store.File) error
	GetFile(id string) (store.File, error)
	ListFiles(purpose, after string, limit int) ([]store.File, error)
	DeleteFile(id string) (store.File, error)
	CreateBatch(ctx context.Context, b store.Batch) error
	GetBatch(id string) (store.Batch, error)
	ListBatches(after string, limit int) ([]store.Batch, error)
	UpdateBatch(id string, change func(b *store.Batch) error) (store.Batch, error)
	EnqueueBatchLines(id string, from int, lines []store.BatchLine, priority, maxAttempts int) (int, error)
	BatchLines(id string, from, n int) ([]store.BatchLineState, error)
	BatchJobStates(id string) (map[store.JobState]int, error)
	CancelBatchLines(id string, from, n int) (map[string]int, error)
	FinishBatch(id string, files []store.File, change func(b *store.Batch) error) (store.Batch, error)
}

// Scheduler is what the manager needs of the scheduler.
type Scheduler interface {
	Admit(ctx context.Context, model string) error
	Notify(model string)
	Bus() *scheduler.Bus
}

// Config holds the manager's settings.
type Config struct {
	Dir          string              // file contents: Dir/FILE_ID (DATA_DIR/files)
	MaxFileBytes int64               // upload limit; default 200 MB
	MaxLineBytes int                 // longest request line; default 1 MiB
	Priority     int                 // the jobs' priority (scheduling.batch_priority)
	MaxAttempts  int                 // stored on each job; default store.DefaultMaxAttempts
	Endpoints    map[string][]string // model → OpenAI paths its engine serves
	Aliases      map[string]string   // alias → model, as the interactive routes take them
	Kinds        map[string]string   // model → job type ("llm", "diffusion")
	Tick         time.Duration       // progress pass period; default 500ms
	Chunk        int                 // lines per enqueue transaction; default 256
	NowFunc      func() time.Time
	Logger       *slog.Logger
}

// Endpoints a batch may name.
var Endpoints = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/images/generations"}

// MaxLines caps the requests of one batch (OpenAI's limit).
const MaxLines = 50_000

// CompletionWindow is the only window accepted.
const CompletionWindow = "24h"

// ErrorKind classifies the errors the manager returns to the API.
type ErrorKind int

// Error kinds.
const (
	KindInvalid  ErrorKind = iota + 1 // the request is wrong (400)
	KindNotFound                      // no such file or batch (404)
	KindTooLarge                      // upload over the size limit (413)
	KindConflict                      // the batch cannot do that in its status (409)
)

// Error is a request error with the field at fault.
type Error struct {
	Kind    ErrorKind
	Param   string
	Message string
}

func (e *Error) Error() string { return e.Message }

func invalid(param, format string, a ...any) *Error {
	return &Error{Kind: KindInvalid, Param: param, Message: param + ": " + fmt.Sprintf(format, a...)}
}

// Manager owns the batches' progress.
type Manager struct {
	cfg    Config
	st     Store
	sched  Scheduler
	log    *slog.Logger
	kickCh chan struct{} // buffered 1: something changed, make a pass
	stats  atomic.Pointer[Stats]
	// Owned by the loop (Run):
	states   map[string]map[store.JobState]int // batch → its lines by job state, as last counted
	active   map[string]bool                   // unfinished batches, as of the last full pass
	finished map[store.BatchStatus]int         // finished batches by status
}

// Stats summarises the batches for metrics and the dashboard: batches by
// status, and the lines of unfinished batches by their job's state.
type Stats struct {
	Batches map[store.BatchStatus]int
	Lines   map[store.JobState]int
}

// New returns a manager; Run makes it work.
func New(cfg Config, st Store, sched Scheduler) *Manager {
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 200_000_000
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = 1 << 20
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 500 * time.Millisecond
	}
	if cfg.Chunk <= 0 {
		cfg.Chunk = 256
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, st: st, sched: sched, log: cfg.Logger, kickCh: make(chan struct{}, 1),
		states: map[string]map[store.JobState]int{}, active: map[string]bool{}, finished: map[store.BatchStatus]int{}}
	m.stats.Store(&Stats{Batches: map[store.BatchStatus]int{}, Lines: map[store.JobState]int{}})
	return m
}

// Stats returns the latest summary (read only).
func (m *Manager) Stats() *Stats { return m.stats.Load() }

func (m *Manager) now() time.Time { return m.cfg.NowFunc().UTC() }

func (m *Manager) kick() {
	select {
	case m.kickCh <- struct{}{}:
	default:
	}
}

func (m *Manager) publish(b store.Batch) {
	m.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvBatchStatus, Batch: b.ID, State: string(b.Status)})
}

// CreateRequest is the body of POST /v1/batches.
type CreateRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
}

// Create checks req and records a batch in status validating; the loop
// validates its lines.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (store.Batch, error) {
	switch {
	case req.InputFileID == "":
		return store.Batch{}, invalid("input_file_id", "required")
	case !slices.Contains(Endpoints, req.Endpoint):
		return store.Batch{}, invalid("endpoint", "must be one of %s", strings.Join(Endpoints, ", "))
	case req.CompletionWindow != CompletionWindow:
		return store.Batch{}, invalid("completion_window", "must be %q", CompletionWindow)
	case len(req.Metadata) > 16:
		return store.Batch{}, invalid("metadata", "at most 16 pairs")
	}
	for k, v := range req.Metadata {
		if len(k) > 64 || len(v) > 512 {
			return store.Batch{}, invalid("metadata", "keys up to 64 characters, values up to 512")
		}
	}
	f, err := m.st.GetFile(req.InputFileID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Batch{}, &Error{Kind: KindNotFound, Param: "input_file_id", Message: fmt.Sprintf("input_file_id: no file %q", req.InputFileID)}
	}
	if err != nil {
		return store.Batch{}, fmt.Errorf("create batch: %w", err)
	}
	if f.Purpose != PurposeBatch {
		return store.Batch{}, invalid("input_file_id", "file %s has purpose %q, not %q", f.ID, f.Purpose, PurposeBatch)
	}
	now := m.now()
	b := store.Batch{
		ID: store.NewSortableID("batch_", now), Endpoint: req.Endpoint, InputFileID: f.ID,
		CompletionWindow: req.CompletionWindow, Metadata: req.Metadata, Status: store.BatchValidating,
		CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
	}
	if err := m.st.CreateBatch(ctx, b); err != nil {
		return store.Batch{}, fmt.Errorf("create batch: %w", err)
	}
	m.log.Info("batch created", "batch_id", b.ID, "input_file_id", f.ID, "endpoint", b.Endpoint)
	m.publish(b)
	m.kick()
	return b, nil
}

// Get returns batch id; a *Error of KindNotFound if there is none.
func (m *Manager) Get(id string) (store.Batch, error) {
	b, err := m.st.GetBatch(id)
	if errors.Is(err, store.ErrNotFound) {
		return b, &Error{Kind: KindNotFound, Message: fmt.Sprintf("no batch %q", id)}
	}
	return b, err
}

// List returns up to limit batches, newest first, after the batch after.
func (m *Manager) List(after string, limit int) ([]store.Batch, error) {
	return m.st.ListBatches(after, limit)
}

// Cancel asks batch id to stop: queued lines are cancelled, running ones
// finish, and the output holds what was done. The batch is cancelling
// until the loop has finished it.
func (m *Manager) Cancel(id string) (store.Batch, error) {
	b, err := m.st.UpdateBatch(id, func(b *store.Batch) error {
		switch b.Status {
		case store.BatchValidating, store.BatchInProgress:
			b.Status = store.BatchCancelling
			b.CancellingAt = m.now()
			return nil
		case store.BatchCancelling:
			return errUnchanged
		}
		return &Error{Kind: KindConflict, Message: fmt.Sprintf("batch %s is %s; it can no longer be cancelled", b.ID, b.Status)}
	})
	if errors.Is(err, errUnchanged) {
		return m.Get(id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return b, &Error{Kind: KindNotFound, Message: fmt.Sprintf("no batch %q", id)}
	}
	var e *Error
	if errors.As(err, &e) {
		return b, e
	}
	if err != nil {
		return b, err
	}
	m.log.Info("batch cancelling", "batch_id", id)
	m.publish(b)
	m.kick()
	return b, nil
}

// errUnchanged aborts an update that has nothing to change.
var errUnchanged = errors.New("unchanged")
