// Package store is VramCram's job queue and record: one bbolt file holding
// every job, a per-model queue ordered by priority then arrival, the results,
// and the VRAM figures learned per model. It imports nothing of ours.
//
// # Layout
//
// Top-level buckets, created by Open:
//
//	jobs      id → Job as JSON (the json field names are the format)
//	queues    model → nested bucket: queue key → id, one entry per queued job
//	results   id → result bytes of a completed job
//	order     8-byte big-endian Seq → id, every job (List, newest first)
//	running   id → model, one entry per running job (recovery, Running)
//	meta      "version" → schema version (SchemaVersion), "queued" → number of queued
//	          jobs (for Options.MaxQueued), nested "learned_vram": model →
//	          8-byte big-endian MB
//
// The queue key is 9 bytes: byte(MaxPriority - priority), so priority 100
// sorts first and -100 last, then Seq as 8-byte big-endian, so equal
// priorities keep arrival order. The head of a model's queue, the job Claim
// takes, is Cursor().First(). Seq comes from the jobs bucket's NextSequence
// and is never reused, so a job requeued after a failed attempt or a restart
// goes back to its original place: ahead of everything that arrived after it.
// A model's queue bucket is deleted when it empties.
//
// # States
//
//	              Enqueue
//	                 │
//	                 ▼
//	           ┌──────────┐ ── Cancel ───────────────────────► cancelled
//	    ┌────► │  queued  │ ── Fail ─────────────────────────► failed
//	    │      └──────────┘
//	    │            │ Claim (Attempts++, StartedAt)
//	    │            ▼
//	    │      ┌──────────┐ ── Complete (stores the result) ─► completed
//	    └───── │ running  │ ── Cancel ───────────────────────► cancelled
//	           └──────────┘ ── Fail ─────────────────────────► failed
//	                        ── Requeue, Open (no attempts left) ► failed
//
//	running → queued: Requeue or Open recovery while Attempts < MaxAttempts
//	(the attempt stays counted), Release (Attempts--: the job never ran to
//	its end, as in a graceful shutdown).
//
// Final states (completed, failed, cancelled) have no way out; Cleanup
// deletes them after the retention period. Every transition is a
// compare-and-set inside one transaction: it reads the job, returns
// ErrStateConflict if the state is not one the operation accepts, and writes
// the record together with the index entries, so that a job is in a queue
// bucket exactly when it is queued and in the running bucket exactly when it
// is running. Check verifies this.
//
// # Group commit
//
// A commit costs an fsync (about 3 ms on the target machine), and bbolt runs
// one writer at a time. So every write operation goes through one committer
// goroutine: callers send it a request holding a function of the
// transaction; the committer takes the first request, then drains whatever
// else is already waiting (up to 256), runs them all in one db.Update and
// answers each with its own error. A lone caller waits about one commit (no
// artificial delay, unlike bbolt's Batch and its 10 ms), and concurrent
// callers share commits: the ones that arrive during a commit ride the next.
//
// The functions run in two phases. The check phase only reads and returns a
// logical error (not found, state conflict, queue full) or an apply function,
// which then writes. So an operation that reports a logical error has written
// nothing and the others in the transaction still commit. If an operation
// panics or its apply phase fails, the transaction is rolled back, that
// caller gets the error and the others run again without it. If the commit
// itself fails, every caller of the batch gets the error. When Enqueue
// returns nil, the job is on disk.
//
// Close stops taking requests, lets the committer finish the ones it took,
// and closes the file; operations after that return ErrClosed. Reads use
// their own bbolt read transactions and do not wait for the committer.
//
// # Schema versions
//
// The meta "version" key is the layout's version; a file without it is
// version 1. Open refuses a file newer than SchemaVersion (ErrNewerSchema,
// naming both versions), and upgrades an older one: it copies the file to
// PATH.bak-vN first, then runs the steps of the migrations table from N up
// and stamps the new version, all in one transaction, so a failed step
// leaves the file as it was. testdata/v1.db is a file of version 1 that
// every later version must open (TestMigrate_V1File).
//
// # Damaged files
//
// Open refuses a damaged file with ErrCorrupt and a message naming it and the
// way out (vramcram store check, vramcram store recover), instead of letting
// bbolt panic: it checks the file is as long as its meta page says, opens it
// and reads every page under a guard that turns bbolt's panics and memory
// faults into errors, then runs bbolt's consistency check. Reads later on run
// under the same guard. CheckFile reports the damage of a file; Salvage
// copies every readable job and result into a fresh file.
//
// # Recovery
//
// Open requeues every job that a crash left running, at its original
// position, keeping the attempt Claim counted; a job with no attempts left
// becomes failed ("interrupted: daemon restarted after N attempts"). A
// second process opening the same file fails with ErrLocked after
// Options.Timeout instead of waiting for ever.
package store
