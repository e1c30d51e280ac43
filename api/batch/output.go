package batch

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vramcram/vramcram/store"
)

// outputLine is one line of an output or error file, in OpenAI's shape.
type outputLine struct {
	ID       string        `json:"id"`
	CustomID string        `json:"custom_id"`
	Response *lineResponse `json:"response"`
	Error    *lineError    `json:"error"`
}

type lineResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// outputWriter writes one output file under a temporary name.
type outputWriter struct {
	f     *os.File
	w     *bufio.Writer
	enc   *json.Encoder
	lines int
	bytes int64
}

func (m *Manager) newOutput() (*outputWriter, error) {
	if err := os.MkdirAll(m.cfg.Dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(m.cfg.Dir, ".output-*")
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	return &outputWriter{f: f, w: w, enc: json.NewEncoder(w)}, nil
}

func (o *outputWriter) write(l outputLine) error {
	o.lines++
	return o.enc.Encode(l)
}

// commit syncs the file and renames it to path; it returns the size.
func (o *outputWriter) commit(path string) (int64, error) {
	err := o.w.Flush()
	if err == nil {
		err = o.f.Sync()
	}
	var size int64
	if fi, serr := o.f.Stat(); err == nil && serr == nil {
		size = fi.Size()
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.f.Name(), path)
	}
	return size, err
}

func (o *outputWriter) discard() {
	_ = o.f.Close()
	_ = os.Remove(o.f.Name())
}

// outputIDs are the IDs of b's output and error files: derived from the
// batch ID, so a finalize redone after a crash writes the same files.
func outputIDs(b store.Batch) (out, errs string) {
	base := "file-" + strings.TrimPrefix(b.ID, "batch_")
	return base + "-output", base + "-errors"
}

// finalize writes b's output and error files from its lines' jobs and
// records them with the final status in one transaction. Lines never
// enqueued (a cancel or expiry came first) are read from the input file so
// that every custom_id appears once, in one of the two files.
func (m *Manager) finalize(b store.Batch) (store.Batch, error) {
	final := store.BatchCompleted
	switch {
	case b.Expire:
		final = store.BatchExpired
	case !b.CancellingAt.IsZero():
		final = store.BatchCancelled
	}
	outW, err := m.newOutput()
	if err != nil {
		return b, fmt.Errorf("finalize: %w", err)
	}
	defer outW.discard() // after commit: the rename has moved it, the close is repeated harmlessly
	errW, err := m.newOutput()
	if err != nil {
		return b, fmt.Errorf("finalize: %w", err)
	}
	defer errW.discard()
	stopped := lineError{Code: "batch_cancelled", Message: "the batch was cancelled before this request ran"}
	if final == store.BatchExpired {
		stopped = lineError{Code: "batch_expired", Message: "this request could not be executed before the completion window expired"}
	}
	for from := 0; from < b.Enqueued; from += 512 {
		lines, err := m.st.BatchLines(b.ID, from, 512)
		if err != nil {
			return b, fmt.Errorf("finalize: %w", err)
		}
		for _, l := range lines {
			out, toErr := lineOutput(b, l, stopped)
			w := outW
			if toErr {
				w = errW
			}
			if err := w.write(out); err != nil {
				return b, fmt.Errorf("finalize: %w", err)
			}
		}
	}
	if err := m.writeUnqueued(b, errW, stopped); err != nil {
		return b, fmt.Errorf("finalize: %w", err)
	}
	outID, errID := outputIDs(b)
	var files []store.File
	now := m.now()
	for _, o := range []struct {
		w  *outputWriter
		id string
	}{{outW, outID}, {errW, errID}} {
		if o.w.lines == 0 {
			continue
		}
		size, err := o.w.commit(m.path(o.id))
		if err != nil {
			return b, fmt.Errorf("finalize: write %s: %w", o.id, err)
		}
		files = append(files, store.File{ID: o.id, Bytes: size, CreatedAt: now, Filename: o.id + ".jsonl", Purpose: PurposeBatchOutput})
	}
	from := b.Status
	nb, err := m.st.FinishBatch(b.ID, files, func(s *store.Batch) error {
		if s.Status != from {
			return fmt.Errorf("%w: batch is %s, not %s", store.ErrStateConflict, s.Status, from)
		}
		s.Status = final
		stamp(s, final, now)
		if outW.lines > 0 {
			s.OutputFileID = outID
		}
		if errW.lines > 0 {
			s.ErrorFileID = errID
		}
		return nil
	})
	if err != nil {
		return b, err
	}
	m.log.Info("batch status", "batch_id", b.ID, "state", final, "from", from,
		"completed", nb.Counts.Completed, "failed", nb.Counts.Failed, "total", nb.Counts.Total)
	m.publish(nb)
	return nb, nil
}

// lineOutput is the output line of one enqueued line, and whether it
// belongs in the error file.
func lineOutput(b store.Batch, l store.BatchLineState, stopped lineError) (outputLine, bool) {
	id := store.BatchJobID(b.ID, l.Line)
	out := outputLine{ID: "batch_req_" + strings.TrimPrefix(id, "batch_"), CustomID: l.CustomID}
	switch l.Job.State {
	case store.JobStateCompleted:
		body := json.RawMessage(l.Result)
		if !json.Valid(body) {
			body, _ = json.Marshal(string(l.Result))
		}
		out.Response = &lineResponse{StatusCode: 200, RequestID: id, Body: body}
		return out, false
	case store.JobStateFailed:
		out.Error = &lineError{Code: "request_failed", Message: l.Job.Error}
	case store.JobStateCancelled:
		e := stopped
		out.Error = &e
	case "":
		out.Error = &lineError{Code: "line_lost", Message: "the job's record was deleted (storage.retention_hours) before the batch finished"}
	default: // queued or running: finalize runs only once none is; defensive
		out.Error = &lineError{Code: "unfinished", Message: "the request had not finished when the batch ended"}
	}
	return out, true
}

// writeUnqueued writes an error line for each request line of b that never
// became a job.
func (m *Manager) writeUnqueued(b store.Batch, w *outputWriter, stopped lineError) error {
	if b.Enqueued >= b.Counts.Total {
		return nil
	}
	f, err := os.Open(m.path(b.InputFileID))
	if errors.Is(err, os.ErrNotExist) {
		m.log.Warn("batch input file deleted: its unqueued lines are left out of the error file",
			"batch_id", b.ID, "lines", b.Counts.Total-b.Enqueued)
		return nil
	}
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(b.Offset, io.SeekStart); err != nil {
		return err
	}
	lr := newLineReader(f, b.Offset, m.cfg.MaxLineBytes)
	for k := b.Enqueued; k < b.Counts.Total; k++ {
		text, _, err := lr.next()
		if err != nil {
			return fmt.Errorf("read input line %d: %w", k, err)
		}
		var rl requestLine
		_ = json.Unmarshal(text, &rl)
		cid := ""
		if rl.CustomID != nil {
			cid = *rl.CustomID
		}
		e := stopped
		id := store.BatchJobID(b.ID, k)
		if err := w.write(outputLine{ID: "batch_req_" + strings.TrimPrefix(id, "batch_"), CustomID: cid, Error: &e}); err != nil {
			return err
		}
	}
	return nil
}
