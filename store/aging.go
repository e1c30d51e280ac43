package store

import (
	"fmt"
	"slices"
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

// agedPosition counts the jobs head would pick before target if claims ran
// now: a merge of the queue's priority bands, each in arrival order, taking
// at every step the band head that head takes (highest effective priority,
// then lowest Seq). It reads the jobs ahead of target plus one per band.
func (s *Store) agedPosition(t *txn, qb *bbolt.Bucket, target Job) (int, error) {
	type band struct {
		c   *bbolt.Cursor
		j   Job
		eff int
	}
	now := s.now()
	var bands []*band
	load := func(b *band, k, v []byte) (bool, error) {
		if k == nil || (b.j.ID != "" && k[0] != queueKey(b.j.Priority, 0)[0]) {
			return false, nil // past the band's last key
		}
		j, err := t.indexedJob(string(v))
		if err != nil {
			return false, err
		}
		b.j, b.eff = j, EffectivePriority(j.Priority, j.CreatedAt, now, s.aging)
		return true, nil
	}
	first := qb.Cursor()
	for k, _ := first.First(); k != nil; {
		b := &band{c: qb.Cursor()}
		bk, bv := b.c.Seek(k)
		if _, err := load(b, bk, bv); err != nil {
			return 0, err
		}
		bands = append(bands, b)
		if k[0] == 255 {
			break
		}
		k, _ = first.Seek([]byte{k[0] + 1})
	}
	for pos := 0; ; pos++ {
		best := -1
		for i, b := range bands {
			if best < 0 || b.eff > bands[best].eff || (b.eff == bands[best].eff && b.j.Seq < bands[best].j.Seq) {
				best = i
			}
		}
		if best < 0 {
			return 0, fmt.Errorf("%w: queued job %s not reached in queue %s", ErrCorrupt, target.ID, target.Model)
		}
		b := bands[best]
		if b.j.ID == target.ID {
			return pos, nil
		}
		nk, nv := b.c.Next()
		ok, err := load(b, nk, nv)
		if err != nil {
			return 0, err
		}
		if !ok {
			bands = slices.Delete(bands, best, best+1)
		}
	}
}

// EffectivePriority is priority raised by one for every aging a job created
// at created has waited by now. aging <= 0 leaves it as is.
func EffectivePriority(priority int, created, now time.Time, aging time.Duration) int {
	if aging <= 0 || !now.After(created) {
		return priority
	}
	return priority + int(now.Sub(created)/aging)
}
