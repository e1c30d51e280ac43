package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"syscall"

	"go.etcd.io/bbolt"
)

// A damaged file makes bbolt panic ("invalid freelist page", "invalid page
// type") or fault on a page address past the end of the file. The functions
// here turn both into errors that name the file and the way out.

// repairAdvice is appended to every corruption error.
const repairAdvice = `stop vramcram, then run "vramcram store check -config FILE" to see the damage ` +
	`and "vramcram store recover -config FILE" to copy every readable job into a fresh file (the damaged one is kept)`

// DamageError is a damaged store file: what was found, in which file, and
// (in Error) what to do. It matches ErrCorrupt with errors.Is.
type DamageError struct {
	Path string
	What string
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("store file %s is damaged: %s; %s", e.Path, e.What, repairAdvice)
}

// Is makes errors.Is(err, ErrCorrupt) hold.
func (e *DamageError) Is(target error) bool { return target == ErrCorrupt }

// corruptError returns a *DamageError.
func corruptError(path, what string) error {
	return &DamageError{Path: path, What: what}
}

// damage returns what a damage error found, or err's text.
func damage(err error) string {
	var de *DamageError
	if errors.As(err, &de) {
		return de.What
	}
	return err.Error()
}

// guard runs fn, turning a panic or a memory fault inside it (bbolt reading
// a damaged page) into an ErrCorrupt error naming path. bbolt's own
// deferred cleanup (rolling back the transaction) runs during the unwind, so
// the file stays usable for further reads.
func guard(path, op string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if p := recover(); p != nil {
			err = corruptError(path, fmt.Sprintf("%s: bbolt panicked: %v", op, p))
		}
	}()
	return fn()
}

// deepCheck reads every key and value of every bucket (so that every
// reachable page is touched in this goroutine, under guard) and then runs
// bbolt's consistency check. bbolt's check runs in a goroutine of its own
// where a fault cannot be recovered, which is why the guarded walk comes
// first: once it has passed, the check only visits pages known to be
// readable.
func deepCheck(path string, db *bbolt.DB) error {
	if err := guard(path, "check", func() error { return walkAll(db) }); err != nil {
		return err
	}
	return guard(path, "check", func() error {
		return db.View(func(tx *bbolt.Tx) error {
			var errs []string
			for err := range tx.Check() {
				if len(errs) < 10 {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) > 0 {
				return corruptError(path, "consistency check: "+strings.Join(errs, "; "))
			}
			return nil
		})
	})
}

// bbolt's meta page, as laid out in go.etcd.io/bbolt/internal/common: a
// 16-byte page header, then magic, version, page size, flags (4 bytes
// each), the root bucket (root page id, sequence), the freelist page id, the
// high water mark (first page id past the data), the txid and an FNV-64a
// checksum of the bytes before it.
const (
	metaOffset   = 16
	metaMagic    = 0xED0CDAED
	metaVersion  = 2
	metaSumStart = 56 // checksum offset within the meta
	metaLen      = 64
)

// fileMeta is what preflight reads from a valid meta page.
type fileMeta struct {
	pageSize uint32
	pgid     uint64 // high water mark
	txid     uint64
}

// parseMeta decodes the meta of the page starting at buf, if it is valid.
func parseMeta(buf []byte) (fileMeta, bool) {
	if len(buf) < metaOffset+metaLen {
		return fileMeta{}, false
	}
	m := buf[metaOffset : metaOffset+metaLen]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != metaMagic || le.Uint32(m[4:]) != metaVersion {
		return fileMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:metaSumStart])
	if h.Sum64() != le.Uint64(m[metaSumStart:]) {
		return fileMeta{}, false
	}
	return fileMeta{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// readMetas returns the valid meta with the highest txid, as bbolt picks it,
// and the file's size; ok is false when neither meta page is valid.
func readMetas(path string) (meta fileMeta, size int64, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return fileMeta{}, 0, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileMeta{}, 0, false, err
	}
	size = fi.Size()
	buf := make([]byte, 4096)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fileMeta{}, size, false, err
	}
	m0, ok0 := parseMeta(buf[:n])
	// The second meta is at offset pageSize: take it from the first meta,
	// else try the usual page sizes.
	sizes := []int64{4096, 8192, 16384, 65536}
	if ok0 {
		sizes = []int64{int64(m0.pageSize)}
	}
	var m1 fileMeta
	ok1 := false
	for _, ps := range sizes {
		b := make([]byte, metaOffset+metaLen)
		if k, _ := f.ReadAt(b, ps); k == len(b) {
			if m1, ok1 = parseMeta(b); ok1 {
				break
			}
		}
	}
	switch {
	case ok0 && (!ok1 || m0.txid >= m1.txid):
		return m0, size, true, nil
	case ok1:
		return m1, size, true, nil
	}
	return fileMeta{}, size, false, nil
}

// preflight refuses a file too short for the pages its meta says it has: a
// truncated file, which bbolt would read past its end (a fault, or "invalid
// freelist page"). A file with no valid meta is left to bbolt, which
// reports it as an error of its own.
func preflight(path string) error {
	meta, size, ok, err := readMetas(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !ok || meta.pageSize == 0 {
		return nil
	}
	if need := int64(meta.pgid) * int64(meta.pageSize); size < need {
		return corruptError(path, fmt.Sprintf("truncated: the file is %d bytes but its pages reach %d bytes", size, need))
	}
	return nil
}

// isNoSpace reports whether err says the disk (or the quota) is full. bbolt
// flattens some errors to text ("file resize error: ..."), so the text
// counts too.
func isNoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// classify marks a failed write on a full disk with ErrNoSpace, keeping the
// original error in the chain.
func classify(err error) error {
	if isNoSpace(err) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
