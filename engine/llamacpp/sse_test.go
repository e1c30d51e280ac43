package llamacpp

import (
	"io"
	"strings"
	"testing"
)

// endless is "data: " then 'a' for ever, counting what was read.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for k := range p {
		p[k] = 'a'
	}
	if e.n == 0 {
		copy(p, "data: ")
	}
	e.n += len(p)
	return len(p), nil
}

// An event line that never ends (a broken or hostile engine) fails once it
// passes maxEventLine, instead of being buffered until memory runs out.
func TestReadSSE_BoundsOneLine(t *testing.T) {
	t.Parallel()
	r := &endless{}
	err := readSSE(r, func([]byte) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err %v, want the line bound", err)
	}
	if r.n > maxEventLine+64<<10 {
		t.Fatalf("read %d bytes for a bound of %d", r.n, maxEventLine)
	}
}

// Lines longer than the reader's buffer still arrive whole.
func TestReadSSE_LongLineWithinBound(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100<<10)
	var got []string
	err := readSSE(strings.NewReader("data: "+long+"\n\ndata: [DONE]\n"), func(d []byte) (bool, error) {
		got = append(got, string(d))
		return false, nil
	})
	if err != io.ErrUnexpectedEOF || len(got) != 1 || got[0] != long {
		t.Fatalf("err %v, %d events", err, len(got))
	}
}
