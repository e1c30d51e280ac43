package store

import (
	"time"

	"go.etcd.io/bbolt"
)

// head returns the job a queue bucket serves next: of the oldest job of
// each priority band, the one with the highest effective priority (its
// priority plus one per Options.Aging waited); ties go to the earlier
// arrival. Without aging that is the first key. It reads one job per band.
func (s *Store) head(t *txn, qb *bbolt.Bucket) (Job, bool, error) {
	if qb == nil {
		return Job{}, false, nil
	}
	c := qb.Cursor()
	k, v := c.First()
	if k == nil {
		return Job{}, false, nil
	}
	best, err := t.indexedJob(string(v))
	if err != nil || s.aging <= 0 {
		return best, err == nil, err
	}
	now := s.now()
	bestEff := EffectivePriority(best.Priority, best.CreatedAt, now, s.aging)
	for k[0] < 255 {
		k, v = c.Seek([]byte{k[0] + 1}) // the oldest job of the next band
		if k == nil {
			break
		}
		j, err := t.indexedJob(string(v))
		if err != nil {
			return Job{}, false, err
		}
		eff := EffectivePriority(j.Priority, j.CreatedAt, now, s.aging)
		if eff > bestEff || (eff == bestEff && j.Seq < best.Seq) {
			best, bestEff = j, eff
		}
	}
	return best, true, nil
}

// EffectivePriority is priority raised by one for every aging a job created
// at created has waited by now. aging <= 0 leaves it as is.
func EffectivePriority(priority int, created, now time.Time, aging time.Duration) int {
	if aging <= 0 || !now.After(created) {
		return priority
	}
	return priority + int(now.Sub(created)/aging)
}
