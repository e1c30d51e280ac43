// Package scheduler decides which model runs where and when.
//
// One goroutine, (*Scheduler).run, owns all mutable state: the registry of
// model instances (loading, ready, draining, stopping), the VRAM ledger, the
// per-model count of queued jobs and the jobs in flight. Everything else talks
// to it with request values on reqCh (each carrying a buffered reply channel)
// or reports outcomes as events on evCh. Slow work — spawning an engine,
// waiting for it to become ready, stopping it, running a job — happens in
// goroutines the loop starts; each comes back as one event (loadDone,
// instExited, slotDone).
//
// # Lifecycle of an instance
//
//	          startLoad                loadDone ok
//	(none) ─────────────► loading ────────────────► ready ◄──┐
//	                         │ loadDone err            │      │ slotDone
//	                         ▼                         ▼      │
//	                      stopping ◄──── drain ──── busy ─────┘
//	                         │          (no new claims; stopped when idle)
//	                         ▼ instExited (process reaped)
//	                      (none): reservation released from the ledger
//
// # Ledger
//
// budget = total − safety margin. An instance reserves its model's VRAM from
// the moment its load starts until its process has exited. A load may start
// only if its reservation fits beside every other reservation and the memory
// held by processes that are not ours. Victims are idle, unpinned instances,
// least recently used first, preferring models with no queued work; a busy
// victim is drained (it finishes what it runs, claims nothing new) and stopped
// once idle — never killed mid-job.
//
// # Workers
//
// A ready instance has Slots slots. For each free slot while its model has
// queued work the loop reserves the slot and starts a goroutine that claims the
// model's next job from the store (self-assignment: the store decides which job
// by priority and arrival), runs it on the engine and records the outcome. The
// loop never blocks on the store's writes. An outcome the store refuses (a
// full disk) goes to the persister (persist.go), which holds it in memory and
// retries it until it lands; meanwhile Snapshot reports the store degraded.
//
// # Policies
//
// fifo: the oldest waiting job (by priority, then arrival) decides which model
// loads next, and idle instances are evicted in LRU order to make room.
// batch (default): models that are loaded keep serving while they have work; an
// unloaded model may evict only idle instances without queued work, until its
// oldest job has waited max_wait, after which it may evict or drain anything
// unpinned. Swaps are fewer and waiting stays bounded.
package scheduler
