package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"
)

// ErrNewerSchema: the file was written by a newer vramcram, whose layout
// this one does not know. Open refuses it rather than misread it.
var ErrNewerSchema = errors.New("store schema is newer than this vramcram")

// migration upgrades the layout from version from to from+1, inside the
// transaction that also stamps the new version. A step must be
// deterministic and must not depend on the clock or the configuration.
type migration struct {
	from  int
	what  string
	apply func(tx *bbolt.Tx) error
}

// migrations is the table of layout upgrades, in order; step k upgrades
// version k+1 to k+2. To change the layout: append a step and describe the
// new layout in the package doc.
var migrations = []migration{
	// Version 1 is every file written before schema versions were checked
	// on upgrade (its meta "version" key holds 1, or is absent in files
	// older still). Version 2 has the same buckets and records.
	{from: 1, what: "stamp schema version 2 (layout unchanged)", apply: func(*bbolt.Tx) error { return nil }},
}

// SchemaVersion is the layout this build writes: one past the last step.
var SchemaVersion = len(migrations) + 1

// MigrationReport says what Open did to an older file.
type MigrationReport struct {
	From, To int
	Backup   string // the copy of the file taken before migrating
}

// schemaVersion reads the file's version: 0 for a fresh file (no buckets
// yet), 1 for a store that has buckets but no version key.
func schemaVersion(tx *bbolt.Tx) (int, error) {
	if tx.Bucket(bucketJobs) == nil && tx.Bucket(bucketMeta) == nil {
		return 0, nil
	}
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 1, nil
	}
	v := meta.Get(keyVersion)
	switch {
	case v == nil:
		return 1, nil
	case len(v) != 8:
		return 0, fmt.Errorf("%w: schema version is %d bytes", ErrCorrupt, len(v))
	}
	n := binary.BigEndian.Uint64(v)
	if n == 0 || n > 1<<20 {
		return 0, fmt.Errorf("%w: schema version %d", ErrCorrupt, n)
	}
	return int(n), nil
}

// migrate brings the file to SchemaVersion: it refuses a newer file, stamps
// a fresh one, and upgrades an older one in one transaction after copying
// it to a backup. It returns what it did to an older file (nil otherwise).
func migrate(db *bbolt.DB, path string, now time.Time) (*MigrationReport, error) {
	var v int
	if err := db.View(func(tx *bbolt.Tx) (err error) {
		v, err = schemaVersion(tx)
		return err
	}); err != nil {
		return nil, err
	}
	switch {
	case v > SchemaVersion:
		return nil, fmt.Errorf("%w: store file %s has schema version %d and this vramcram reads versions up to %d; run the newer vramcram that wrote it, or restore a backup (%s.bak-v*)",
			ErrNewerSchema, path, v, SchemaVersion, path)
	case v == SchemaVersion:
		return nil, nil
	case v == 0:
		return nil, db.Update(func(tx *bbolt.Tx) error { return stampVersion(tx, SchemaVersion) })
	}
	backup, err := backupFile(db, path, v, now)
	if err != nil {
		return nil, fmt.Errorf("back up before migrating from schema %d: %w", v, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, m := range migrations[v-1:] {
			if err := m.apply(tx); err != nil {
				return fmt.Errorf("migrate schema %d→%d (%s): %w", m.from, m.from+1, m.what, err)
			}
		}
		return stampVersion(tx, SchemaVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("%w (the file is unchanged; a copy is at %s)", err, backup)
	}
	return &MigrationReport{From: v, To: SchemaVersion, Backup: backup}, nil
}

func stampVersion(tx *bbolt.Tx, v int) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketMeta, err)
	}
	if err := meta.Put(keyVersion, u64(uint64(v))); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return nil
}

// backupFile copies the store (a consistent snapshot, fsync'd) to
// PATH.bak-vN, or PATH.bak-vN-TIMESTAMP if that exists already: an earlier
// backup is never overwritten.
func backupFile(db *bbolt.DB, path string, v int, now time.Time) (string, error) {
	name := fmt.Sprintf("%s.bak-v%d", path, v)
	if _, err := os.Stat(name); err == nil {
		name = fmt.Sprintf("%s.bak-v%d-%s", path, v, now.UTC().Format("20060102T150405Z"))
	}
	err := db.View(func(tx *bbolt.Tx) error {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := tx.WriteTo(f); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		_ = os.Remove(name)
		return "", classify(err)
	}
	return name, nil
}
