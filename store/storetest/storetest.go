// Package storetest is the conformance suite of the job queue contract: the
// same tests run against every backend (bbolt in package store, Redis in
// store/redisstore), so that the scheduler and the API can rely on one
// behaviour whichever backend the daemon was configured with.
//
// A backend's test calls Exercise with a Harness that opens handles on fresh
// data. What the suite checks: enqueue and read, ordering (priority, then
// arrival), priorities with aging, the compare-and-set state transitions,
// bounded queues, listing, crash recovery (a claimed job of a process that
// died goes back to the queue with its attempt counted), concurrent
// claimers (every job claimed exactly once), retention and learned figures.
package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// Queue is the job queue contract: the union of what the scheduler
// (scheduler.JobStore), the API (api.Store) and the daemon need of a backend.
type Queue interface {
	Enqueue(ctx context.Context, j *store.Job) error
	Claim(model string) (store.Job, error)
	Complete(id string, result []byte) error
	Fail(id, reason string) error
	Requeue(id, reason string) (store.JobState, error)
	Release(id string) error
	Cancel(id string) (store.JobState, error)
	Get(id string) (store.Job, error)
	Result(id string) ([]byte, error)
	Position(id string) (int, error)
	List(f store.ListFilter) ([]store.Job, error)
	Running() ([]store.Job, error)
	Depths() (map[string]int, error)
	QueueDepths() (map[string]map[int]int, error)
	Heads() (map[string]store.Job, error)
	Cleanup(finishedBefore time.Time) (int, error)
	SetLearnedVRAM(model string, mb int) error
	LearnedVRAM() (map[string]int, error)
	Close() error
}

// Options are the settings a test asks the harness to open a queue with.
type Options struct {
	MaxQueued int
	Aging     time.Duration
	NowFunc   func() time.Time
}

// Harness opens queues of one backend.
type Harness struct {
	// Open returns a handle on fresh, empty data with opts; the harness
	// closes it when the test ends (a handle the test closed itself too).
	Open func(t *testing.T, opts Options) Queue
	// Crash makes q's process die without a word (no release, no lease
	// renewal) and returns a handle on the same data as the process that
	// takes over sees it: the next daemon on the same bbolt file, another
	// node on the same Redis. The job q had claimed must come back to the
	// queue (polled for, with a deadline of RecoveryWait).
	Crash func(t *testing.T, q Queue, opts Options) Queue
	// RecoveryWait bounds the wait for crashed jobs to come back; default
	// 10s.
	RecoveryWait time.Duration
}

// Clock is a NowFunc that moves only when told.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at a fixed instant.
func NewClock() *Clock { return &Clock{now: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Exercise runs the whole suite against h's backend.
func Exercise(t *testing.T, h Harness) {
	if h.RecoveryWait <= 0 {
		h.RecoveryWait = 10 * time.Second
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"EnqueueGet", testEnqueueGet},
		{"Ordering", testOrdering},
		{"Aging", testAging},
		{"PositionFollowsAging", testPositionAging},
		{"Transitions", testTransitions},
		{"Retry", testRetry},
		{"CompleteTwice", testCompleteTwice},
		{"QueueFull", testQueueFull},
		{"List", testList},
		{"Views", testViews},
		{"CrashRecovery", testCrashRecovery},
		{"ConcurrentClaimers", testConcurrentClaimers},
		{"Retention", testRetention},
		{"LearnedVRAM", testLearnedVRAM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}
