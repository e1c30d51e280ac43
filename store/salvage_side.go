package store

import (
	"fmt"

	"go.etcd.io/bbolt"
)

// sideBuckets are the buckets Salvage copies as they are, besides jobs,
// results and learned figures: batches, their lines and file records. The
// batch jobs themselves are jobs and are salvaged as such.
var sideBuckets = [][]byte{bucketBatches, bucketBatchLines, bucketFiles}

// tree is the readable content of one bucket: its pairs and its nested
// buckets.
type tree struct {
	pairs []rawPair
	subs  map[string]*tree
	seq   uint64
}

// count is the number of pairs at t's top level; 0 for nil.
func (t *tree) count() int {
	if t == nil {
		return 0
	}
	return len(t.pairs)
}

// size is the number of pairs in t and below.
func (t *tree) size() int {
	n := len(t.pairs)
	for _, s := range t.subs {
		n += s.size()
	}
	return n
}

// readTree copies b's pairs and nested buckets into t. A damaged page
// stops the walk with a panic, which the caller's guard turns into an
// error; what was read before it stays in t.
func readTree(b *bbolt.Bucket, t *tree) error {
	t.seq = b.Sequence()
	return b.ForEach(func(k, v []byte) error {
		if v != nil {
			t.pairs = append(t.pairs, rawPair{key: append([]byte(nil), k...), value: append([]byte(nil), v...)})
			return nil
		}
		child := b.Bucket(k)
		if child == nil {
			return nil
		}
		sub := &tree{}
		if t.subs == nil {
			t.subs = map[string]*tree{}
		}
		t.subs[string(k)] = sub
		return readTree(child, sub)
	})
}

// readSide reads the side buckets of db, each under its own guard.
func (r *readable) readSide(path string, db *bbolt.DB) {
	for _, name := range sideBuckets {
		t := &tree{}
		err := guard(path, "read "+string(name), func() error {
			return db.View(func(tx *bbolt.Tx) error {
				if b := tx.Bucket(name); b != nil {
					return readTree(b, t)
				}
				return nil
			})
		})
		if err != nil {
			r.problems = append(r.problems, fmt.Sprintf("reading %s: %s", name, damage(err)))
		}
		if t.size() > 0 || t.seq > 0 {
			r.side[string(name)] = t
		}
	}
}

// writeTree writes t as bucket name under parent (nil: at the top level).
func writeTree(tx *bbolt.Tx, parent *bbolt.Bucket, name string, t *tree) error {
	var b *bbolt.Bucket
	var err error
	if parent == nil {
		b, err = tx.CreateBucketIfNotExists([]byte(name))
	} else {
		b, err = parent.CreateBucketIfNotExists([]byte(name))
	}
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	for _, p := range t.pairs {
		if err := b.Put(p.key, p.value); err != nil {
			return err
		}
	}
	for k, sub := range t.subs {
		if err := writeTree(tx, b, k, sub); err != nil {
			return err
		}
	}
	return b.SetSequence(t.seq)
}
