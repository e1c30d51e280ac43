package redisstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vramcram/vramcram/store"
)

// band is the width of one priority in a queue score.
const band = 1 << 40

// decode builds a Job from a job hash, given as a flat field, value list
// (a script's HGETALL) or a map.
func decode(fields []any) (store.Job, error) {
	m := make(map[string]string, len(fields)/2)
	for k := 0; k+1 < len(fields); k += 2 {
		key, _ := fields[k].(string)
		val, _ := fields[k+1].(string)
		m[key] = val
	}
	return decodeMap(m)
}

func decodeMap(m map[string]string) (store.Job, error) {
	var j store.Job
	if err := json.Unmarshal([]byte(m["d"]), &j); err != nil {
		return store.Job{}, fmt.Errorf("decode job: %w: %v", store.ErrCorrupt, err)
	}
	var errs []error
	num := func(k string) int {
		n, err := strconv.Atoi(m[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s %q", k, m[k]))
		}
		return n
	}
	ts := func(k string) time.Time {
		if m[k] == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, m[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s %q", k, m[k]))
		}
		return t
	}
	j.State = store.JobState(m["st"])
	j.Seq = uint64(num("s"))
	j.Attempts = num("a")
	j.MaxAttempts = num("ma")
	j.Priority = num("p")
	j.Error = m["e"]
	j.StartedAt = ts("sa")
	j.FinishedAt = ts("fa")
	if !j.State.Valid() {
		errs = append(errs, fmt.Errorf("state %q", j.State))
	}
	if len(errs) > 0 {
		return store.Job{}, fmt.Errorf("decode job %s: %w: %v", j.ID, store.ErrCorrupt, errors.Join(errs...))
	}
	return j, nil
}

func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// Get returns the job with that ID. Returns store.ErrNotFound,
// store.ErrUnavailable.
func (s *Store) Get(id string) (store.Job, error) {
	if !store.ValidID(id) {
		return store.Job{}, fmt.Errorf("get %s: %w", id, store.ErrNotFound)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	m, err := s.rdb.HGetAll(ctx, s.p+"job:"+id).Result()
	if err != nil {
		return store.Job{}, fmt.Errorf("get %s: %w", id, s.wrap(err))
	}
	if len(m) == 0 {
		return store.Job{}, fmt.Errorf("get %s: %w", id, store.ErrNotFound)
	}
	j, err := decodeMap(m)
	if err != nil {
		return store.Job{}, fmt.Errorf("get %s: %w", id, err)
	}
	return j, nil
}

// getMany reads jobs in one pipeline; IDs with no record are skipped.
func (s *Store) getMany(ctx context.Context, ids []string) ([]store.Job, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, id := range ids {
			cmds[k] = p.HGetAll(ctx, s.p+"job:"+id)
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	out := make([]store.Job, 0, len(ids))
	for _, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			continue // deleted since the index was read
		}
		j, err := decodeMap(m)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// Result returns the result stored by Complete. Returns store.ErrNotFound.
func (s *Store) Result(id string) ([]byte, error) {
	if !store.ValidID(id) {
		return nil, fmt.Errorf("result %s: %w", id, store.ErrNotFound)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	b, err := s.rdb.Get(ctx, s.p+"result:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("result %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("result %s: %w", id, s.wrap(err))
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// Depths returns the number of queued jobs per model.
func (s *Store) Depths() (map[string]int, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	models, err := s.rdb.SMembers(ctx, s.p+"models").Result()
	if err != nil {
		return nil, fmt.Errorf("depths: %w", s.wrap(err))
	}
	cmds := make([]*redis.IntCmd, len(models))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, m := range models {
			cmds[k] = p.ZCard(ctx, s.p+"q:"+m)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("depths: %w", s.wrap(err))
	}
	out := map[string]int{}
	for k, m := range models {
		if n := cmds[k].Val(); n > 0 {
			out[m] = int(n)
		}
	}
	return out, nil
}

// QueueDepths returns the number of queued jobs per model and priority. It
// reads every queued job's score: for metrics scrapes.
func (s *Store) QueueDepths() (map[string]map[int]int, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	models, err := s.rdb.SMembers(ctx, s.p+"models").Result()
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", s.wrap(err))
	}
	out := map[string]map[int]int{}
	for _, m := range models {
		zs, err := s.rdb.ZRangeWithScores(ctx, s.p+"q:"+m, 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("queue depths: %w", s.wrap(err))
		}
		for _, z := range zs {
			if out[m] == nil {
				out[m] = map[int]int{}
			}
			out[m][store.MaxPriority-int(math.Floor(z.Score/band))]++
		}
	}
	return out, nil
}

// Heads returns, per model with queued jobs, the job Claim would take next.
func (s *Store) Heads() (map[string]store.Job, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	pairs, err := scriptHeads.Run(ctx, s.rdb, nil, s.p, s.now().UnixMilli(), s.aging).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("heads: %w", s.wrap(err))
	}
	var ids []string
	for k := 1; k < len(pairs); k += 2 {
		ids = append(ids, pairs[k])
	}
	jobs, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("heads: %w", err)
	}
	out := make(map[string]store.Job, len(jobs))
	for _, j := range jobs {
		out[j.Model] = j
	}
	return out, nil
}

// Position returns the job's 0-based place in the order Claim will take
// its model's queue in, aging included (as store.Store.Position). Returns
// store.ErrStateConflict if the job is not queued, store.ErrNotFound.
func (s *Store) Position(id string) (int, error) {
	if !store.ValidID(id) {
		return 0, fmt.Errorf("position %s: %w", id, store.ErrNotFound)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	f, err := s.rdb.HMGet(ctx, s.p+"job:"+id, "st", "m").Result()
	if err != nil {
		return 0, fmt.Errorf("position %s: %w", id, s.wrap(err))
	}
	st, _ := f[0].(string)
	model, _ := f[1].(string)
	switch {
	case st == "":
		return 0, fmt.Errorf("position %s: %w", id, store.ErrNotFound)
	case st != string(store.JobStateQueued):
		return 0, fmt.Errorf("position %s: %w: job is %s", id, store.ErrStateConflict, st)
	}
	n, err := scriptPosition.Run(ctx, s.rdb, nil, s.p, model, id, s.now().UnixMilli(), s.aging).Int()
	if err != nil {
		return 0, fmt.Errorf("position %s: %w", id, s.wrap(err))
	}
	if n < 0 {
		return 0, fmt.Errorf("position %s: %w: left the queue", id, store.ErrStateConflict)
	}
	return n, nil
}

// listPage is how many job IDs List reads per round trip.
const listPage = 256

// List returns the jobs matching f, newest first. It walks the arrival
// index from the newest (or from f.BeforeSeq) and stops at f.Limit.
func (s *Store) List(f store.ListFilter) ([]store.Job, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, fmt.Errorf("list: %w: state %q", store.ErrInvalid, f.State)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*opTimeout)
	defer cancel()
	maxScore := "+inf"
	if f.BeforeSeq > 0 {
		maxScore = "(" + strconv.FormatUint(f.BeforeSeq, 10)
	}
	var out []store.Job
	for {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.p+"order", &redis.ZRangeBy{Max: maxScore, Min: "-inf", Count: listPage}).Result()
		if err != nil {
			return nil, fmt.Errorf("list: %w", s.wrap(err))
		}
		ids := make([]string, len(zs))
		for k, z := range zs {
			ids[k], _ = z.Member.(string)
		}
		jobs, err := s.getMany(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		for _, j := range jobs {
			if (f.Model == "" || j.Model == f.Model) && (f.State == "" || j.State == f.State) {
				out = append(out, j)
				if f.Limit > 0 && len(out) >= f.Limit {
					return out, nil
				}
			}
		}
		if len(zs) < listPage {
			return out, nil
		}
		maxScore = "(" + strconv.FormatFloat(zs[len(zs)-1].Score, 'f', 0, 64)
	}
}

// Running returns every running job, oldest Seq first.
func (s *Store) Running() ([]store.Job, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	ids, err := s.rdb.ZRange(ctx, s.p+"running", 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("running: %w", s.wrap(err))
	}
	jobs, err := s.getMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("running: %w", err)
	}
	jobs = slices.DeleteFunc(jobs, func(j store.Job) bool { return j.State != store.JobStateRunning })
	slices.SortFunc(jobs, func(a, b store.Job) int { return cmp.Compare(a.Seq, b.Seq) })
	return jobs, nil
}
