package runner

import (
	"bufio"
	"io"
	"regexp"
	"sync"
)

// maxLineLen caps one stored output line; the rest of a longer line is
// dropped (llama-server prints long lines only when dumping prompts).
const maxLineLen = 4096

// ring keeps the last n output lines.
type ring struct {
	mu   sync.Mutex
	buf  []string
	next int                          // index of the oldest line once buf is full
	subs map[*outputFollower]struct{} // FollowOutput's (output_follow.go)
}

func newRing(n int) *ring { return &ring{buf: make([]string, 0, n)} }

func (r *ring) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.publishLocked(line)
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, line)
		return
	}
	r.buf[r.next] = line
	r.next = (r.next + 1) % len(r.buf)
}

// lines returns a copy, oldest first.
func (r *ring) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.linesLocked()
}

func (r *ring) linesLocked() []string {
	out := make([]string, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// readLines calls fn for each line of rd (without the line ending), until
// EOF or a read error. A final line without a newline is delivered too.
func readLines(rd io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(rd, 16*1024)
	var line []byte
	for {
		frag, isPrefix, err := br.ReadLine()
		if len(line) < maxLineLen {
			line = append(line, frag[:min(len(frag), maxLineLen-len(line))]...)
		}
		if err != nil {
			if len(line) > 0 {
				fn(string(line))
			}
			return
		}
		if isPrefix {
			continue
		}
		fn(string(line))
		line = line[:0]
	}
}

// ansiEscape matches terminal control sequences such as the "\033[K" that
// ends each progress bar update.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// readTermLines calls fn for each line of rd, split at "\n", "\r\n" or a
// lone "\r" (a redrawn progress bar), without terminal escapes. Lines over
// maxLineLen are cut; reading goes on until EOF so the writer never blocks.
func readTermLines(rd io.Reader, fn func(string)) {
	buf := make([]byte, 16*1024)
	var line []byte
	emit := func() {
		fn(ansiEscape.ReplaceAllString(string(line), ""))
		line = line[:0]
	}
	for {
		n, err := rd.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case '\n', '\r':
				if len(line) > 0 || b == '\n' {
					emit()
				}
			default:
				if len(line) < maxLineLen {
					line = append(line, b)
				}
			}
		}
		if err != nil {
			if len(line) > 0 {
				emit()
			}
			return
		}
	}
}
