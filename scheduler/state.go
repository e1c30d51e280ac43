package scheduler

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vramcram/vramcram/vram"
)

// InstState is the state of a model instance.
type InstState string

// Instance states; see the package documentation for the transitions.
const (
	InstLoading  InstState = "loading"
	InstReady    InstState = "ready"
	InstDraining InstState = "draining"
	InstStopping InstState = "stopping"
)

// Model states reported by Snapshot.
const (
	ModelUnloaded    = "unloaded"
	ModelLoading     = "loading"
	ModelReady       = "ready"
	ModelBusy        = "busy"
	ModelDraining    = "draining"
	ModelStopping    = "stopping"
	ModelFailed      = "failed"
	ModelUnavailable = "unavailable"
)

// instance is one engine process serving one model. Owned by the loop.
type instance struct {
	id         int
	model      *modelState
	eng        Engine // nil until launched
	state      InstState
	reservedMB int         // the sum of place
	place      []Placement // reservation per device
	estimateMB int         // the reservation at the start, before measurements
	estimate   []Placement // the placement at the start
	measuredMB int         // latest figure the meter reports for the process
	peak       []int       // per device of place: highest figure the meter reported
	startedAt  time.Time
	readyAt    time.Time
	lastUsed   time.Time
	inflight   int // slots handed to runSlot goroutines
	claiming   int // of those, not yet holding a job
	drainLeft  int // while draining: jobs and requests it may still take
	exited     bool
	cancelLoad context.CancelFunc
	stopReason string
	// keepAlive overrides the model's TTL once keepAliveSet (by the last
	// lease that asked, as Ollama's keep_alive does): < 0 never unloads
	// when idle, 0 unloads as soon as idle, > 0 is the idle time.
	keepAlive    time.Duration
	keepAliveSet bool
}

// ttl is how long i may stay idle before it is stopped; 0: forever.
func (i *instance) ttl() time.Duration {
	switch {
	case !i.keepAliveSet:
		return i.model.TTL
	case i.keepAlive < 0:
		return 0
	case i.keepAlive == 0:
		return time.Nanosecond // at once
	}
	return i.keepAlive
}

// modelState is the loop's record of one configured model.
type modelState struct {
	Model
	inst         *instance
	queued       int // jobs waiting in the store, as the loop believes
	lastUsed     time.Time
	loadFailures int // consecutive
	crashes      int // consecutive crashes after ready
	backoffUntil time.Time
	lastErr      string
	unavailable  string    // why the model cannot start (binary or file missing)
	failing      bool      // a failQueued goroutine runs for this model
	wantLoaded   bool      // preload or an explicit load request, until ready
	waiters      []*waiter // interactive requests, best first
	avgRun       float64   // seconds per completed job, moving average (0: none yet)
	avgLoad      float64   // seconds per load, moving average
	demand       demand    // recent arrivals of jobs and requests
	tokens       tokenStats
	lastEng      Engine // the latest engine launched, kept for its output
	removed      bool   // gone from the config: drains, then forgotten (reconfigure.go)
}

// waiting is the number of jobs and interactive requests waiting for m.
func (m *modelState) waiting() int { return m.queued + len(m.waiters) }

// jobRun is a job running on an instance.
type jobRun struct {
	id      string
	model   string
	inst    *instance
	cancel  context.CancelCauseFunc
	started time.Time // set by the loop at jobStarted
	// progress is written by runSlot and read by the loop.
	mu       sync.Mutex
	progress Progress
	text     strings.Builder
}

// record stores p (and appends its chunk to the text so far).
func (r *jobRun) record(p Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.text.WriteString(p.Chunk)
	p.Chunk = ""
	r.progress = p
}

// snapshot returns the latest progress and the text so far.
func (r *jobRun) snapshot() (Progress, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress, r.text.String()
}

// exitedEngine is an engine process that has exited, whose memory the driver
// may not have returned yet.
type exitedEngine struct {
	pid int
	at  time.Time
}

// state is everything the loop owns.
type state struct {
	models map[string]*modelState
	order  []string // config order, for stable output
	runs   map[string]*jobRun
	// early holds cancels of jobs not yet in runs (claimed, their
	// jobStarted still on the way), by job ID with when they came, so
	// that jobStarted can apply them (pending.go).
	early      map[string]time.Time
	leases     map[string]*Lease
	waiterSeq  uint64
	leaseSeq   uint64
	devs       []*devState
	nextInstID int

	// exited lists engines that exited recently: the next load waits for
	// their memory to show free.
	exited []exitedEngine

	closing     bool
	forced      bool
	stopReplies []chan struct{}
	graceCh     <-chan time.Time
}

func newState(cfg Config) *state {
	st := &state{models: map[string]*modelState{}, runs: map[string]*jobRun{}, early: map[string]time.Time{}, leases: map[string]*Lease{}}
	for _, m := range cfg.Models {
		if m.Slots <= 0 {
			m.Slots = 1
		}
		st.models[m.Name] = &modelState{Model: m}
		st.order = append(st.order, m.Name)
	}
	for _, d := range cfg.Devices {
		st.devs = append(st.devs, &devState{Device: d,
			reading: vram.Reading{Source: vram.SourceConfig, TotalMB: d.TotalMB, FreeMB: d.TotalMB}})
	}
	return st
}

// instances returns live instances in a stable order.
func (st *state) instances() []*instance {
	var out []*instance
	for _, name := range st.order {
		if i := st.models[name].inst; i != nil {
			out = append(out, i)
		}
	}
	return out
}

// ours returns the PIDs of our engines, and of those that exited recently:
// memory a stale reading still shows for them is not another program's
// (the load that follows waits for it to come back, see waitReleased).
func (st *state) ours() map[int]bool {
	pids := map[int]bool{}
	for _, i := range st.instances() {
		if i.eng != nil && i.eng.PID() > 0 {
			pids[i.eng.PID()] = true
		}
	}
	for _, e := range st.exited {
		pids[e.pid] = true
	}
	return pids
}

// Snapshot is a point-in-time view for /health and /models.
type Snapshot struct {
	Policy     string         `json:"policy"`
	VRAMSource string         `json:"vram_source"`
	TotalMB    int            `json:"vram_total_mb"`
	BudgetMB   int            `json:"vram_budget_mb"`
	ReservedMB int            `json:"vram_reserved_mb"`
	NotOursMB  int            `json:"vram_not_ours_mb"`
	FreeMB     int            `json:"vram_free_mb"`
	Devices    []DeviceStatus `json:"devices"`
	QueueDepth int            `json:"queue_depth"`
	Running    int            `json:"running"`
	Models     []ModelStatus  `json:"models"`
	// StoreDegraded says why store writes are failing ("" when they are
	// not); HeldWrites counts finished jobs whose outcome is held in memory
	// until the store takes it (they are no longer running, nor stored).
	StoreDegraded string `json:"store_degraded,omitempty"`
	HeldWrites    int    `json:"held_writes,omitempty"`
}

// ModelStatus is one model in a Snapshot.
type ModelStatus struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	State      string `json:"state"`
	VRAMMB     int    `json:"vram_mb"`
	EstimateMB int    `json:"vram_estimate_mb"`
	ReservedMB int    `json:"vram_reserved_mb"`
	MeasuredMB int    `json:"vram_measured_mb,omitempty"` // the running engine, now; absent until measured (no NVML: never)
	LearnedMB  int    `json:"vram_learned_mb"`            // peak measured, kept across loads
	Pinned     bool   `json:"pinned"`
	Slots      int    `json:"slots"`
	Running    int    `json:"running"`
	Queued     int    `json:"queued"`
	PID        int    `json:"pid,omitempty"`
	// Placement is where the running instance is, per device.
	Placement []Placement `json:"placement,omitempty"`
	LastUsed  *time.Time  `json:"last_used"`
	LoadedAt  *time.Time  `json:"loaded_at,omitempty"`
	// Recent averages, for ETAs: seconds a job ran and a load took.
	AvgJobSeconds  float64 `json:"avg_job_seconds,omitempty"`
	AvgLoadSeconds float64 `json:"avg_load_seconds,omitempty"`
	// Token figures since the daemon started, and the recent generation
	// speed (tokens/s, moving average); absent until a request reported them.
	PromptTokens    int64   `json:"prompt_tokens,omitempty"`
	GeneratedTokens int64   `json:"generated_tokens,omitempty"`
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	Reason          string  `json:"reason,omitempty"`
}

// DeviceStatus is one GPU in a Snapshot.
type DeviceStatus struct {
	Index      int    `json:"index"`
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Source     string `json:"vram_source"`
	TotalMB    int    `json:"vram_total_mb"`
	BudgetMB   int    `json:"vram_budget_mb"`
	ReservedMB int    `json:"vram_reserved_mb"`
	NotOursMB  int    `json:"vram_not_ours_mb"`
	FreeMB     int    `json:"vram_free_mb"`
	Lost       string `json:"lost,omitempty"`
}

// Loaded returns the names of models with a ready (or busy) instance.
func (s Snapshot) Loaded() []string {
	out := []string{}
	for _, m := range s.Models {
		if m.State == ModelReady || m.State == ModelBusy {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// modelStateName is what /models shows for m at now.
func modelStateName(m *modelState, now time.Time) string {
	if m.unavailable != "" {
		return ModelUnavailable
	}
	if i := m.inst; i != nil {
		switch i.state {
		case InstLoading:
			return ModelLoading
		case InstReady:
			if i.inflight > i.claiming {
				return ModelBusy
			}
			return ModelReady
		case InstDraining:
			return ModelDraining
		case InstStopping:
			return ModelStopping
		}
	}
	if now.Before(m.backoffUntil) || m.lastErr != "" && m.loadFailures > 0 {
		return ModelFailed
	}
	return ModelUnloaded
}
