package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vramcram/vramcram/store"
)

// Options configures Open.
type Options struct {
	// URL is the server, redis://[:password@]host:port/db (or rediss://).
	URL string
	// Prefix starts every key; default "vramcram:". Fleets sharing one
	// Redis database for different queues use different prefixes.
	Prefix string
	// Node names this process in the fleet; default the host name. A job
	// records the node that claimed it, and a node that starts again with
	// the same name requeues the jobs its previous run left running.
	Node string
	// Lease is how long a claim holds without renewal; default 30s. The
	// store renews the leases of its running jobs every Lease/3; a node that
	// dies stops renewing, and any live node requeues its jobs (attempt
	// counted) once the lease has run out.
	Lease time.Duration
	// ReapInterval is how often expired leases are looked for; default
	// Lease/4, at most 5s.
	ReapInterval time.Duration
	// RetryFor bounds how long the outcome of a running job (Complete, Fail,
	// Requeue, Release) is retried while Redis is unreachable; default 10m.
	RetryFor time.Duration
	// MaxQueued caps queued jobs over all models (0: no cap).
	MaxQueued int
	// Aging raises a queued job's priority by one per Aging waited, as in
	// store.Options.
	Aging time.Duration
	// NowFunc is the clock of job timestamps and aging; default time.Now.
	// Lease deadlines use Redis's own clock, so nodes' clocks may differ.
	NowFunc func() time.Time
	// OnExpire, if set, is called with the jobs whose lease this node found
	// expired (requeued or failed), from the store's maintenance goroutine.
	OnExpire func([]Expired)
	Logger   *slog.Logger
}

// Expired is a job that a lease expiry (or a restart's recovery) ended.
type Expired struct {
	ID    string
	Model string
	State store.JobState // queued or failed
}

// Store is the job queue on a Redis server; it implements the same
// contract as store.Store (see store/storetest). Safe for concurrent use.
type Store struct {
	rdb   *redis.Client
	o     Options
	p     string
	log   *slog.Logger
	now   func() time.Time
	aging int64 // ms

	mu      sync.Mutex
	claimed map[string]string // id → lease token, jobs this handle claimed and has not ended

	closing   chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	recovered int
}

// Open connects to Redis, checks that it answers, requeues the jobs this
// node's previous run left running, and starts renewing leases and
// requeueing expired ones. Returns store.ErrUnavailable when the server
// does not answer, store.ErrInvalid for a bad URL.
func Open(ctx context.Context, o Options) (*Store, error) {
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("open redis store: %w: url: %v", store.ErrInvalid, err)
	}
	if o.Prefix == "" {
		o.Prefix = "vramcram:"
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.ReapInterval <= 0 {
		o.ReapInterval = min(o.Lease/4, 5*time.Second)
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 10 * time.Minute
	}
	if o.NowFunc == nil {
		o.NowFunc = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxQueued < 0 {
		return nil, fmt.Errorf("open redis store: %w: max queued %d", store.ErrInvalid, o.MaxQueued)
	}
	redis.SetLogger(slogPrinter{o.Logger}) // process-wide: the daemon opens one store
	ro.MaxRetries = 1
	ro.DialTimeout = 2 * time.Second
	ro.ReadTimeout = 5 * time.Second
	ro.WriteTimeout = 5 * time.Second
	ro.PoolSize = max(ro.PoolSize, 64)
	s := &Store{
		rdb:     redis.NewClient(ro),
		o:       o,
		p:       o.Prefix,
		log:     o.Logger,
		now:     o.NowFunc,
		aging:   o.Aging.Milliseconds(),
		claimed: map[string]string{},
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, fmt.Errorf("open redis store %s: %w: %v", ro.Addr, store.ErrUnavailable, err)
	}
	now := s.now().UTC()
	res, err := scriptRecover.Run(ctx, s.rdb, nil, s.p, now.Format(time.RFC3339Nano), now.UnixMicro(), o.Node).Slice()
	if err != nil {
		_ = s.rdb.Close()
		return nil, fmt.Errorf("open redis store: recover: %w", s.wrap(err))
	}
	s.recovered = len(res)
	if exp := expired(res); len(exp) > 0 && o.OnExpire != nil {
		o.OnExpire(exp)
	}
	go s.maintain()
	return s, nil
}

// Recovered reports how many running jobs of this node's previous run Open
// ended (requeued, or failed without attempts left).
func (s *Store) Recovered() int { return s.recovered }

// Node returns this node's name.
func (s *Store) Node() string { return s.o.Node }

// Client returns the connection pool (for the fleet registry and events).
func (s *Store) Client() *redis.Client { return s.rdb }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.p }

// Close stops the lease maintenance and closes the connections. Jobs still
// running keep their leases until they run out (the scheduler releases its
// jobs before the store is closed). Idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		<-s.done
		if err := s.rdb.Close(); err != nil {
			s.closeErr = fmt.Errorf("close redis store: %w", err)
		}
	})
	return s.closeErr
}

func (s *Store) closed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// wrap maps go-redis errors to the store's sentinels: anything but a reply
// from the server is the server being unreachable.
func (s *Store) wrap(err error) error {
	if err == nil {
		return nil
	}
	if s.closed() || errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("%w: %v", store.ErrClosed, err)
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !isLoading(err) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
}

func isLoading(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && len(rerr.Error()) >= 7 && rerr.Error()[:7] == "LOADING"
}

// maintain renews this node's leases and ends expired ones, until Close.
func (s *Store) maintain() {
	defer close(s.done)
	renew := time.NewTicker(s.o.Lease / 3)
	defer renew.Stop()
	reap := time.NewTicker(s.o.ReapInterval)
	defer reap.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-renew.C:
			s.renew()
		case <-reap.C:
			s.reap()
		}
	}
}

func (s *Store) renew() {
	s.mu.Lock()
	args := []any{s.p, s.o.Lease.Milliseconds()}
	for id, tok := range s.claimed {
		args = append(args, id, tok)
	}
	s.mu.Unlock()
	if len(args) == 2 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Lease/3)
	defer cancel()
	lost, err := scriptRenew.Run(ctx, s.rdb, nil, args...).StringSlice()
	if err != nil {
		s.log.Warn("renew job leases", "node", s.o.Node, "jobs", len(args)/2-1, "err", s.wrap(err))
		return
	}
	sent := map[string]string{}
	for k := 2; k+1 < len(args); k += 2 {
		sent[args[k].(string)] = args[k+1].(string)
	}
	for _, id := range lost {
		s.log.Warn("lease lost: the job was requeued or ended elsewhere; its result here will be refused", "job_id", id, "node", s.o.Node)
		s.forget(id, sent[id])
	}
}

func (s *Store) reap() {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.ReapInterval)
	defer cancel()
	now := s.now().UTC()
	res, err := scriptReap.Run(ctx, s.rdb, nil, s.p, now.Format(time.RFC3339Nano), now.UnixMicro(), 256).Slice()
	if err != nil {
		s.log.Debug("reap expired leases", "err", s.wrap(err))
		return
	}
	exp := expired(res)
	for _, e := range exp {
		s.log.Warn("lease expired: job taken back from its node", "job_id", e.ID, "model", e.Model, "state", e.State)
	}
	if len(exp) > 0 && s.o.OnExpire != nil {
		s.o.OnExpire(exp)
	}
}

func expired(res []any) []Expired {
	var out []Expired
	for _, r := range res {
		t, ok := r.([]any)
		if !ok || len(t) != 3 {
			continue
		}
		id, _ := t[0].(string)
		model, _ := t[1].(string)
		st, _ := t[2].(string)
		out = append(out, Expired{ID: id, Model: model, State: store.JobState(st)})
	}
	return out
}

// crash stops the maintenance goroutine and drops the connections without
// releasing anything: the process died. For tests.
func (s *Store) crash() { _ = s.Close() }

func (s *Store) token(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claimed[id]
}

// forget drops id's lease token if it is still tok: a claim made since
// (the job came back and this node claimed it again) keeps its own.
func (s *Store) forget(id, tok string) {
	s.mu.Lock()
	if s.claimed[id] == tok {
		delete(s.claimed, id)
	}
	s.mu.Unlock()
}

// slogPrinter hands go-redis's own messages (pool dial failures during an
// outage, which the store already reports) to slog at debug level.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	p.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
