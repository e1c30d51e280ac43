package api

import (
	"io"
	"sync"

	"github.com/vramcram/vramcram/engine"
)

// usageTailBytes is how much of the end of a relayed answer is kept to read
// its token figures from: llama-server puts usage and timings at the end of
// a JSON answer and in the last events of a stream, well within this.
const usageTailBytes = 8 << 10

// usageTail keeps the last usageTailBytes of a relayed answer as it is
// copied, so the tokens of an interactive request are counted without
// parsing or holding the answer: one small copy per read. Used by one
// request's goroutine only.
type usageTail struct {
	buf  [usageTailBytes]byte
	n    int // bytes held, at most len(buf)
	next int // where the next byte goes once full (ring)
}

// usageTails are pooled: a request does not allocate one.
var usageTails = sync.Pool{New: func() any { return new(usageTail) }}

// getUsageTail returns an empty tail from the pool; putUsageTail gives it back.
func getUsageTail() *usageTail {
	t := usageTails.Get().(*usageTail)
	t.n, t.next = 0, 0
	return t
}

func putUsageTail(t *usageTail) {
	if t != nil {
		usageTails.Put(t)
	}
}

// wrap returns rc reading through t; a nil t returns rc.
func (t *usageTail) wrap(rc io.ReadCloser) io.ReadCloser {
	if t == nil {
		return rc
	}
	return tailReader{ReadCloser: rc, t: t}
}

type tailReader struct {
	io.ReadCloser
	t *usageTail
}

func (r tailReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.t.write(p[:n])
	return n, err
}

func (t *usageTail) write(p []byte) {
	if len(p) >= len(t.buf) {
		copy(t.buf[:], p[len(p)-len(t.buf):])
		t.n, t.next = len(t.buf), 0
		return
	}
	for len(p) > 0 {
		c := copy(t.buf[t.next:], p)
		p = p[c:]
		t.next = (t.next + c) % len(t.buf)
		t.n = min(t.n+c, len(t.buf))
	}
}

// bytes returns the kept tail in order.
func (t *usageTail) bytes() []byte {
	if t.n < len(t.buf) {
		return t.buf[:t.n]
	}
	out := make([]byte, 0, len(t.buf))
	out = append(out, t.buf[t.next:]...)
	return append(out, t.buf[:t.next]...)
}

// usage reads the token figures from the kept tail.
func (t *usageTail) usage() (engine.Usage, bool) {
	if t == nil {
		return engine.Usage{}, false
	}
	return engine.FindUsage(t.bytes())
}
