package scheduler

import (
	"sync"
	"time"
)

// Event types published on the bus.
const (
	EvJobQueued        = "job_queued"
	EvJobStarted       = "job_started"
	EvJobProgress      = "job_progress"
	EvJobFinished      = "job_finished"
	EvModelLoading     = "model_loading"
	EvModelReady       = "model_ready"
	EvModelEvicted     = "model_evicted"
	EvModelUnloaded    = "model_unloaded"
	EvModelFailed      = "model_failed"
	EvModelUnavailable = "model_unavailable"
	EvReleaseTimeout   = "vram_release_timeout"
	EvDeviceLost       = "device_lost"
	EvVRAMReading      = "vram_reading" // a GPU's figures changed
	EvDeviceBack       = "device_back"
	EvBatchStatus      = "batch_status" // an OpenAI batch changed status (Batch, State)
)

// Event is one thing that happened, as published on the bus and served as SSE.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Model   string    `json:"model,omitempty"`
	Device  string    `json:"device,omitempty"`
	JobID   string    `json:"job_id,omitempty"`
	Batch   string    `json:"batch_id,omitempty"`
	State   string    `json:"state,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Error   string    `json:"error,omitempty"`
	VRAMMB  int       `json:"vram_mb,omitempty"`
	Tokens  int       `json:"tokens,omitempty"`
	Step    int       `json:"step,omitempty"`
	Steps   int       `json:"steps,omitempty"`
	Chunk   string    `json:"chunk,omitempty"`
	Seconds float64   `json:"seconds,omitempty"`
	// A job_finished event of an LLM job or request: the tokens the engine
	// reported and its generation speed (usage.go).
	PromptTokens     int     `json:"prompt_tokens,omitempty"`
	CompletionTokens int     `json:"completion_tokens,omitempty"`
	TokensPerSecond  float64 `json:"tokens_per_second,omitempty"`
	// A vram_reading: the GPU's total, free (driver) and not-ours MiB.
	TotalMB   int `json:"vram_total_mb,omitempty"`
	FreeMB    int `json:"vram_free_mb,omitempty"`
	NotOursMB int `json:"vram_not_ours_mb,omitempty"`
	// Node is the fleet node the event happened on, set when it came from
	// another node through the shared queue's event channel; empty: here.
	Node string `json:"node,omitempty"`
}

// Bus fans events out to subscribers. Publish never blocks: each subscriber
// has a bounded buffer and a subscriber that falls behind loses events (its
// Dropped count says how many).
type Bus struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*Subscription]struct{}
	ring eventRing // recent events for replay (bus_ring.go)
}

// Subscription receives events on C until Close.
type Subscription struct {
	C       <-chan Event
	c       chan Event
	bus     *Bus
	dropped uint64 // guarded by bus.mu
	once    sync.Once
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{subs: map[*Subscription]struct{}{}} }

// Subscribe returns a subscription with a buffer of n events (min 1).
func (b *Bus) Subscribe(n int) *Subscription {
	c := make(chan Event, max(n, 1))
	sub := &Subscription{C: c, c: c, bus: b}
	b.mu.Lock()
	b.subs[sub] = struct{}{}
	b.mu.Unlock()
	return sub
}

// Close detaches the subscription and closes C. Safe to call twice.
func (sub *Subscription) Close() {
	sub.once.Do(func() {
		sub.bus.mu.Lock()
		delete(sub.bus.subs, sub)
		close(sub.c)
		sub.bus.mu.Unlock()
	})
}

// Dropped reports how many events this subscriber missed.
func (sub *Subscription) Dropped() uint64 {
	sub.bus.mu.Lock()
	defer sub.bus.mu.Unlock()
	return sub.dropped
}

// Publish stamps e with a sequence number and time and hands it to every
// subscriber that has room.
func (b *Bus) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Seq = b.seq
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.ring.add(e)
	for sub := range b.subs {
		select {
		case sub.c <- e:
		default:
			sub.dropped++
		}
	}
}
