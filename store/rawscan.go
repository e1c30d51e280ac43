package store

import (
	"encoding/binary"
	"io"
	"os"
)

// A raw scan reads a store file page by page without bbolt, for Salvage:
// every leaf page that still parses gives up its key/value pairs, whatever
// the state of the pages above it. Layout (go.etcd.io/bbolt/internal/common):
// a page starts with a 16-byte header (id u64, flags u16, count u16,
// overflow u32); a leaf page then holds count 16-byte elements (flags, pos,
// ksize, vsize; u32 each), the key at element offset + pos and the value
// right after it. A bucket entry (element flag 1) whose value starts with a
// zero root page id holds a whole small bucket inline: a 16-byte bucket
// header, then a leaf page.
const (
	pageHeaderLen    = 16
	leafElemLen      = 16
	leafPageFlag     = 0x02
	bucketLeafFlag   = 0x01
	bucketHeaderLen  = 16
	maxRawScanPages  = 1 << 24 // 64 GiB of 4 KiB pages: beyond that, stop
	maxInlineNesting = 4
)

// rawPair is one key/value pair found on a leaf page.
type rawPair struct{ key, value []byte }

// rawScan returns the pairs of every leaf page of the file at path (page
// size pageSize), inline buckets included. Pairs come from live and freed
// pages alike: the caller decides which to trust.
func rawScan(path string, pageSize int) ([]rawPair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	pages := info.Size() / int64(pageSize) // whole pages in the file
	var out []rawPair
	buf := make([]byte, pageSize)
	for id := int64(0); id < maxRawScanPages; id++ {
		n, err := f.ReadAt(buf, id*int64(pageSize))
		if n < pageHeaderLen {
			if err == io.EOF || err == nil {
				break
			}
			return out, err
		}
		page := buf[:n]
		if binary.LittleEndian.Uint64(page[0:]) != uint64(id) || binary.LittleEndian.Uint16(page[8:]) != leafPageFlag {
			continue
		}
		if over := int64(binary.LittleEndian.Uint32(page[12:])); over > 0 {
			// The page continues over the next pages: read them all, but
			// never past the end of the file (a damaged header may claim
			// billions of pages).
			over = min(over, max(0, pages-id-1))
			full := make([]byte, (over+1)*int64(pageSize))
			k, _ := f.ReadAt(full, id*int64(pageSize))
			page = full[:k]
			id += over
		}
		out = appendLeaf(out, page, 0)
	}
	return out, nil
}

// appendLeaf appends the pairs of the leaf page in page, skipping any
// element whose bounds do not fit: a damaged page yields what it can.
func appendLeaf(out []rawPair, page []byte, depth int) []rawPair {
	if len(page) < pageHeaderLen || binary.LittleEndian.Uint16(page[8:]) != leafPageFlag {
		return out
	}
	count := int(binary.LittleEndian.Uint16(page[10:]))
	for i := range count {
		off := pageHeaderLen + i*leafElemLen
		if off+leafElemLen > len(page) {
			break
		}
		e := page[off : off+leafElemLen]
		flags := binary.LittleEndian.Uint32(e[0:])
		pos, ks, vs := int(binary.LittleEndian.Uint32(e[4:])), int(binary.LittleEndian.Uint32(e[8:])), int(binary.LittleEndian.Uint32(e[12:]))
		kStart := off + pos
		if pos < 0 || ks < 0 || vs < 0 || kStart < 0 || kStart+ks+vs > len(page) || kStart+ks+vs < kStart {
			continue
		}
		key, value := page[kStart:kStart+ks], page[kStart+ks:kStart+ks+vs]
		if flags&bucketLeafFlag != 0 {
			if depth < maxInlineNesting && len(value) > bucketHeaderLen && binary.LittleEndian.Uint64(value[0:]) == 0 {
				out = appendLeaf(out, value[bucketHeaderLen:], depth+1)
			}
			continue
		}
		out = append(out, rawPair{key: append([]byte(nil), key...), value: append([]byte(nil), value...)})
	}
	return out
}
