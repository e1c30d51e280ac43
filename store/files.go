package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// The files bucket is created by the first write that needs it, so stores
// made before it existed open unchanged (reads treat a missing bucket as
// empty).
var bucketFiles = []byte("files") // id → JSON File, ids sort by creation time

// File is the record of an uploaded or generated file (OpenAI's Files API).
// Its content lives outside the bbolt file, under the data directory; the
// record is written after the content is on disk. Field json names are part
// of the on-disk format.
type File struct {
	ID        string    `json:"id"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at"`
	Filename  string    `json:"filename"`
	Purpose   string    `json:"purpose"` // "batch" (uploads), "batch_output" (results)
}

// NewSortableID returns prefix followed by the creation time in 16 hex
// digits and 8 random characters: IDs made later sort after earlier ones,
// so a bucket keyed by them lists in creation order. The result passes
// ValidID when prefix does.
func NewSortableID(prefix string, now time.Time) string {
	return fmt.Sprintf("%s%016x%s", prefix, uint64(now.UnixNano()), NewID()[idTimeLen:idTimeLen+8])
}

// PutFile records f. Returns ErrInvalid for a bad ID, ErrStateConflict if
// a file with that ID exists, ErrClosed or ctx's error.
func (s *Store) PutFile(ctx context.Context, f File) error {
	if !ValidID(f.ID) {
		return fmt.Errorf("put file: %w: id %q", ErrInvalid, f.ID)
	}
	f.CreatedAt = f.CreatedAt.UTC()
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("put file %s: %w", f.ID, err)
	}
	err = s.write(ctx, func(t *txn) (func() error, error) {
		if fb := t.tx.Bucket(bucketFiles); fb != nil && fb.Get([]byte(f.ID)) != nil {
			return nil, fmt.Errorf("%w: file exists", ErrStateConflict)
		}
		return func() error { return putFileTx(t.tx, f.ID, b) }, nil
	})
	if err != nil {
		return fmt.Errorf("put file %s: %w", f.ID, err)
	}
	return nil
}

func putFileTx(tx *bbolt.Tx, id string, b []byte) error {
	fb, err := tx.CreateBucketIfNotExists(bucketFiles)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketFiles, err)
	}
	return fb.Put([]byte(id), b)
}

// GetFile returns the record of file id. Returns ErrNotFound, ErrCorrupt.
func (s *Store) GetFile(id string) (File, error) {
	var f File
	err := s.view(func(t *txn) error {
		fb := t.tx.Bucket(bucketFiles)
		if fb == nil || !ValidID(id) {
			return ErrNotFound
		}
		v := fb.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return decodeFile(id, v, &f)
	})
	if err != nil {
		return File{}, fmt.Errorf("get file %s: %w", id, err)
	}
	return f, nil
}

func decodeFile(id string, v []byte, f *File) error {
	if err := json.Unmarshal(v, f); err != nil || f.ID != id {
		return fmt.Errorf("%w: file record %q", ErrCorrupt, id)
	}
	return nil
}

// ListFiles returns up to limit files, newest first, starting after the
// file whose ID is after (all from the newest when empty); purpose, if not
// empty, keeps only files of that purpose.
func (s *Store) ListFiles(purpose, after string, limit int) ([]File, error) {
	var out []File
	err := s.view(func(t *txn) error {
		fb := t.tx.Bucket(bucketFiles)
		if fb == nil {
			return nil
		}
		return reverseFrom(fb, after, func(k, v []byte) (bool, error) {
			var f File
			if err := decodeFile(string(k), v, &f); err != nil {
				return false, err
			}
			if purpose == "" || f.Purpose == purpose {
				out = append(out, f)
			}
			return limit > 0 && len(out) >= limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	return out, nil
}

// reverseFrom walks b from its last key down, or from the key just below
// after when after is not empty, until fn reports done.
func reverseFrom(b *bbolt.Bucket, after string, fn func(k, v []byte) (bool, error)) error {
	c := b.Cursor()
	var k, v []byte
	if after == "" {
		k, v = c.Last()
	} else if k, v = c.Seek([]byte(after)); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil; k, v = c.Prev() {
		done, err := fn(k, v)
		if err != nil || done {
			return err
		}
	}
	return nil
}

// DeleteFile removes the record of file id and returns it, so the caller
// can remove the content. Returns ErrNotFound.
func (s *Store) DeleteFile(id string) (File, error) {
	var f File
	err := s.write(context.Background(), func(t *txn) (func() error, error) {
		fb := t.tx.Bucket(bucketFiles)
		if fb == nil || !ValidID(id) {
			return nil, ErrNotFound
		}
		v := fb.Get([]byte(id))
		if v == nil {
			return nil, ErrNotFound
		}
		if err := decodeFile(id, v, &f); err != nil {
			return nil, err
		}
		return func() error { return fb.Delete([]byte(id)) }, nil
	})
	if err != nil {
		return File{}, fmt.Errorf("delete file %s: %w", id, err)
	}
	return f, nil
}
