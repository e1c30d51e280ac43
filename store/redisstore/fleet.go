package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Heartbeat records this node as live with info (its GPUs, budgets and
// loaded models, as the caller encodes them) for ttl: a node that stops
// beating drops out of Nodes when ttl runs out.
func (s *Store) Heartbeat(ctx context.Context, info []byte, ttl time.Duration) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.p+"node:"+s.o.Node, info, ttl)
		p.SAdd(ctx, s.p+"nodes", s.o.Node)
		return nil
	})
	if err != nil {
		return fmt.Errorf("heartbeat %s: %w", s.o.Node, s.wrap(err))
	}
	return nil
}

// Nodes returns the info of every live node, by name (this one included),
// and forgets nodes whose heartbeat has run out.
func (s *Store) Nodes(ctx context.Context) (map[string][]byte, error) {
	names, err := s.rdb.SMembers(ctx, s.p+"nodes").Result()
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", s.wrap(err))
	}
	out := map[string][]byte{}
	if len(names) == 0 {
		return out, nil
	}
	keys := make([]string, len(names))
	for k, n := range names {
		keys[k] = s.p + "node:" + n
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", s.wrap(err))
	}
	var gone []any
	for k, v := range vals {
		if str, ok := v.(string); ok {
			out[names[k]] = []byte(str)
		} else {
			gone = append(gone, names[k])
		}
	}
	if len(gone) > 0 {
		_ = s.rdb.SRem(ctx, s.p+"nodes", gone...).Err()
	}
	return out, nil
}

// ClaimLoad takes the right to load model for ttl unless another node
// holds it: two nodes deciding at the same moment do not both load a
// model. It reports whether this node holds the right.
func (s *Store) ClaimLoad(ctx context.Context, model string, ttl time.Duration) (bool, error) {
	key := s.p + "loading:" + model
	ok, err := s.rdb.SetNX(ctx, key, s.o.Node, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("claim load %s: %w", model, s.wrap(err))
	}
	if ok {
		return true, nil
	}
	holder, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return false, nil // expired between the two calls: try again later
	}
	return holder == s.o.Node, nil
}

// PublishEvent sends payload to every node's SubscribeEvents.
func (s *Store) PublishEvent(ctx context.Context, payload []byte) error {
	if err := s.rdb.Publish(ctx, s.p+"events", payload).Err(); err != nil {
		return fmt.Errorf("publish event: %w", s.wrap(err))
	}
	return nil
}

// SubscribeEvents calls fn with each payload published by any node (this
// one included) until ctx ends. The subscription reconnects by itself
// after an outage; events published meanwhile are lost (pub/sub keeps
// nothing), which is why job state is always read from the store.
func (s *Store) SubscribeEvents(ctx context.Context, fn func([]byte)) {
	sub := s.rdb.Subscribe(ctx, s.p+"events")
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			fn([]byte(m.Payload))
		}
	}
}
