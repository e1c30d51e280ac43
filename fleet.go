package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/store/redisstore"
)

// jobQueue is what the daemon needs of its queue backend: store.Store
// (bbolt) or redisstore.Store. Both pass store/storetest.
type jobQueue interface {
	scheduler.JobStore
	api.Store
	QueueDepths() (map[string]map[int]int, error)
	Cleanup(finishedBefore time.Time) (int, error)
	LearnedVRAM() (map[string]int, error)
	SetLearnedVRAM(model string, mb int) error
	Recovered() int
	Close() error
}

// openQueue opens the backend storage.backend names. For redis it also
// returns the fleet node, which main starts once the scheduler exists.
func openQueue(ctx context.Context, cfg *config.Config, log *slog.Logger) (jobQueue, *fleetNode, error) {
	if cfg.Storage.Backend != config.BackendRedis {
		st, err := store.Open(filepath.Join(cfg.Storage.DataDir, storeFile), store.Options{MaxQueued: cfg.Scheduling.MaxQueue, Aging: seconds(cfg.Scheduling.AgingSeconds)})
		if err != nil {
			return nil, nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil, nil
	}
	r := cfg.Storage.Redis
	f := &fleetNode{log: log.With("component", "fleet"), maxWait: seconds(cfg.Scheduling.MaxWaitSeconds),
		url: advertiseURL(cfg)}
	lease := seconds(r.LeaseSeconds)
	f.interval = min(max(lease/6, 500*time.Millisecond), 5*time.Second)
	rs, err := redisstore.Open(ctx, redisstore.Options{
		URL: r.URL, Prefix: r.Prefix, Node: r.Node, Lease: lease,
		MaxQueued: cfg.Scheduling.MaxQueue, Aging: seconds(cfg.Scheduling.AgingSeconds),
		Logger: log.With("component", "store"), OnExpire: f.expired,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open redis store (storage.redis.url): %w", err)
	}
	f.rs, f.name = rs, rs.Node()
	return rs, f, nil
}

// fleetNode is this daemon as a member of a fleet sharing one Redis: it
// beats (its GPUs, budgets and models), keeps a view of the other live
// nodes for the scheduler (scheduler.Fleet), and bridges the event bus
// with every other node's.
type fleetNode struct {
	rs       *redisstore.Store
	name     string
	url      string
	log      *slog.Logger
	maxWait  time.Duration
	interval time.Duration

	sched  atomic.Pointer[scheduler.Scheduler]
	others atomic.Pointer[[]wire.Node] // written by the heartbeat goroutine only
}

// start runs the heartbeat and the event bridge until ctx ends.
func (f *fleetNode) start(ctx context.Context, sched *scheduler.Scheduler) {
	f.sched.Store(sched)
	go f.beat(ctx)
	go f.bridgeOut(ctx, sched.Bus())
	go f.rs.SubscribeEvents(ctx, func(b []byte) { f.bridgeIn(ctx, b) })
}

func (f *fleetNode) beat(ctx context.Context) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		f.beatOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beatTTL is how many beat intervals a heartbeat stays: a node that is
// slow for a few beats (a starved CPU, a slow Redis round trip) stays in the
// others' view, so they do not load its models a second time.
const beatTTL = 5

func (f *fleetNode) beatOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, f.interval)
	defer cancel()
	snap, err := f.sched.Load().Snapshot(ctx)
	if err != nil {
		return
	}
	b, _ := json.Marshal(f.info(snap))
	if err := f.rs.Heartbeat(ctx, b, beatTTL*f.interval); err != nil {
		f.log.Warn("fleet heartbeat", "err", err)
		return
	}
	nodes, err := f.nodes(ctx)
	if err != nil {
		return
	}
	nodes = slices.DeleteFunc(nodes, func(n wire.Node) bool { return n.Node == f.name })
	f.others.Store(&nodes)
}

// info describes this node from a scheduler snapshot.
func (f *fleetNode) info(snap scheduler.Snapshot) wire.Node {
	n := wire.Node{Node: f.name, URL: f.url, Seen: time.Now().UTC(), GPUs: snap.Devices, Loaded: snap.Loaded(),
		Fits: []string{}, QueueDepth: snap.QueueDepth, Running: snap.Running}
	for _, d := range snap.Devices {
		n.BudgetMB = max(n.BudgetMB, d.BudgetMB)
	}
	for _, m := range snap.Models {
		if m.State == scheduler.ModelLoading {
			n.Loading = append(n.Loading, m.Name)
		}
		need := m.LearnedMB
		for _, v := range []int{m.VRAMMB, m.EstimateMB} {
			if need == 0 {
				need = v
			}
		}
		if need <= n.BudgetMB && m.State != scheduler.ModelUnavailable {
			n.Fits = append(n.Fits, m.Name)
		}
	}
	return n
}

// nodes reads every live node's heartbeat.
func (f *fleetNode) nodes(ctx context.Context) ([]wire.Node, error) {
	raw, err := f.rs.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Node, 0, len(raw))
	for name, b := range raw {
		var n wire.Node
		if err := json.Unmarshal(b, &n); err != nil {
			f.log.Warn("fleet: bad heartbeat", "node", name, "err", err)
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b wire.Node) int {
		if a.Node < b.Node {
			return -1
		}
		return 1
	})
	return out, nil
}

// fleetView answers /health's "fleet": every live node.
func (f *fleetNode) fleetView(ctx context.Context) ([]wire.Node, error) {
	return f.nodes(ctx)
}

// MayLoad implements scheduler.Fleet: not while another live node holds or
// loads the model and the queue's oldest job has waited less than
// max_wait_seconds; and only one node at a time takes the right to load.
func (f *fleetNode) MayLoad(model string, waited time.Duration) bool {
	if waited >= f.maxWait {
		return true
	}
	if others := f.others.Load(); others != nil {
		for _, n := range *others {
			if slices.Contains(n.Loaded, model) || slices.Contains(n.Loading, model) {
				return false
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ok, err := f.rs.ClaimLoad(ctx, model, max(10*time.Second, 4*f.interval))
	return ok && err == nil
}

// FitsElsewhere implements scheduler.Fleet.
func (f *fleetNode) FitsElsewhere(model string) bool {
	if others := f.others.Load(); others != nil {
		for _, n := range *others {
			if slices.Contains(n.Fits, model) {
				return true
			}
		}
	}
	return false
}

// expired is told of jobs whose claimer's lease ran out (or that a restart
// recovered): every node's scheduler learns that they are queued again.
func (f *fleetNode) expired(jobs []redisstore.Expired) {
	sched := f.sched.Load()
	if sched == nil {
		return // at Open: the scheduler reads the queue when it starts
	}
	for _, j := range jobs {
		sched.Bus().Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: j.Model, JobID: j.ID, State: string(j.State), Reason: "lease expired"})
		if j.State == store.JobStateQueued {
			sched.Notify(j.Model)
		}
	}
}

// bridgeOut publishes this node's events to the other nodes. GPU readings
// stay local.
func (f *fleetNode) bridgeOut(ctx context.Context, bus *scheduler.Bus) {
	sub := bus.Subscribe(4096)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C:
			if !ok {
				return
			}
			if ev.Node != "" || ev.Type == scheduler.EvVRAMReading {
				continue
			}
			ev.Node = f.name
			b, _ := json.Marshal(ev)
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := f.rs.PublishEvent(pctx, b); err != nil {
				f.log.Debug("fleet: publish event", "type", ev.Type, "err", err)
			}
			cancel()
		}
	}
}

// bridgeIn hands another node's event to this node's bus, and tells the
// scheduler of work queued elsewhere and of cancels of jobs running here.
func (f *fleetNode) bridgeIn(ctx context.Context, b []byte) {
	var ev scheduler.Event
	if err := json.Unmarshal(b, &ev); err != nil || ev.Node == "" || ev.Node == f.name {
		return
	}
	sched := f.sched.Load()
	ev.Seq = 0
	sched.Bus().Publish(ev)
	switch {
	case ev.Type == scheduler.EvJobQueued, ev.Type == scheduler.EvJobFinished && ev.State == string(store.JobStateQueued):
		sched.Notify(ev.Model)
	case ev.Type == scheduler.EvJobFinished && ev.State == string(store.JobStateCancelled):
		// Only a cancel the store has recorded: a node whose late result
		// was refused also reports its run as cancelled.
		if j, err := f.rs.Get(ev.JobID); err != nil || j.State != store.JobStateCancelled {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = sched.Cancel(cctx, ev.JobID)
		cancel()
	}
}

// remoteFor implements api.Config.RemoteFor: the URL of the least busy
// other live node with model ready, while this node neither holds nor
// loads it.
func (f *fleetNode) remoteFor(ctx context.Context, model string) (string, bool) {
	others, sched := f.others.Load(), f.sched.Load()
	if others == nil || sched == nil {
		return "", false
	}
	if snap, err := sched.Snapshot(ctx); err != nil || slices.Contains(snap.Loaded(), model) ||
		slices.ContainsFunc(snap.Models, func(m scheduler.ModelStatus) bool {
			return m.Name == model && m.State == scheduler.ModelLoading
		}) {
		return "", false
	}
	best, load := "", 0
	for _, n := range *others {
		if n.URL == "" || n.URL == f.url || !slices.Contains(n.Loaded, model) {
			continue
		}
		if l := n.Running + n.QueueDepth; best == "" || l < load {
			best, load = n.URL, l
		}
	}
	return best, best != ""
}
