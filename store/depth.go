package store

import "fmt"

// QueueDepths returns the number of queued jobs per model and priority;
// models and priorities with none are absent. It reads only the queue keys
// (the priority is their first byte), so it costs one key read per queued
// job, and is meant for metrics scrapes, not for a request path.
func (s *Store) QueueDepths() (map[string]map[int]int, error) {
	out := map[string]map[int]int{}
	err := s.view(func(t *txn) error {
		return t.queues.ForEachBucket(func(model []byte) error {
			c := t.queues.Bucket(model).Cursor()
			var byPrio map[int]int
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if len(k) == 0 {
					return fmt.Errorf("%w: empty key in queue %s", ErrCorrupt, model)
				}
				if byPrio == nil {
					byPrio = map[int]int{}
					out[string(model)] = byPrio
				}
				byPrio[MaxPriority-int(k[0])]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", err)
	}
	return out, nil
}
