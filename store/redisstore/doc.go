// Package redisstore is the job queue on a Redis server, for a fleet of
// VramCram nodes sharing one queue (storage.backend: redis). It passes the
// same conformance suite as the bbolt store (store/storetest) and adds
// leases: a claim belongs to the node that made it for Options.Lease, the
// node renews it while the job runs, and when a node dies any live node
// puts its jobs back in the queue (attempt counted) once the lease has run
// out.
//
// # Keys (after Options.Prefix, default "vramcram:")
//
//	job:ID      hash: d (the submission as JSON), m model, p priority,
//	            s seq, st state, a attempts, ma max attempts, c created ms,
//	            e error, sa started, fa finished (RFC 3339), n node,
//	            tok lease token (running only)
//	q:MODEL     zset of queued IDs, score (100-priority)·2^40 + seq: the
//	            first member is the head, equal priorities keep arrival order
//	models      set of models with queued jobs
//	queued      number of queued jobs (Options.MaxQueued)
//	running     zset of running IDs, score the lease deadline (Redis's clock, ms)
//	order       zset of every job ID by seq (List, newest first)
//	final       zset of final job IDs by finish time (µs): retention
//	result:ID   the result of a completed job
//	seq, claims counters: arrival order, lease tokens
//	learned     hash model → learned VRAM MB
//
// # Atomicity
//
// Every write is one Lua script (scripts.go), so every transition is a
// compare-and-set with its index changes, as one bbolt transaction is. A
// claim takes a fresh token; Complete, Requeue, Release and Fail of a
// running job are accepted only with the token of the claim that is still
// current, so a node whose lease expired (a slow node that comes back)
// cannot write a second result: results are stored once.
//
// # Outages
//
// Errors that are not a reply from the server wrap store.ErrUnavailable
// (the API answers 503). The outcome of a job that ran through an outage
// is retried for Options.RetryFor; renewals resume when Redis is back, and
// a job whose lease ran out meanwhile is requeued and its late result
// refused. What an outage can lose depends on Redis's appendfsync: see
// docs/fleet.md.
package redisstore
