package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vramcram/vramcram/store"
)

// File purposes.
const (
	PurposeBatch       = "batch"        // an uploaded batch input
	PurposeBatchOutput = "batch_output" // a batch's output or error file
)

// SaveFile streams r into a new file of purpose batch (no whole-file
// buffer: it goes to disk as it comes, up to MaxFileBytes), syncs it and
// records it. Returns a *Error of KindTooLarge past the limit.
func (m *Manager) SaveFile(ctx context.Context, filename string, r io.Reader) (store.File, error) {
	if err := os.MkdirAll(m.cfg.Dir, 0o750); err != nil {
		return store.File{}, fmt.Errorf("save file: %w", err)
	}
	now := m.now()
	f := store.File{ID: store.NewSortableID("file-", now), CreatedAt: now, Filename: filepath.Base(filename), Purpose: PurposeBatch}
	tmp, err := os.CreateTemp(m.cfg.Dir, ".upload-*")
	if err != nil {
		return store.File{}, fmt.Errorf("save file: %w", err)
	}
	defer os.Remove(tmp.Name()) // the content stays under its ID's name (a link)
	n, err := io.Copy(tmp, io.LimitReader(r, m.cfg.MaxFileBytes+1))
	if err == nil && n > m.cfg.MaxFileBytes {
		err = &Error{Kind: KindTooLarge, Param: "file",
			Message: fmt.Sprintf("file: larger than %d bytes (storage.max_file_mb)", m.cfg.MaxFileBytes)}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// A link, not a rename: it never replaces a file already there (two
		// IDs alike would otherwise lose the first upload's content).
		err = os.Link(tmp.Name(), m.path(f.ID))
	}
	var e *Error
	if errors.As(err, &e) {
		return store.File{}, e
	}
	if err != nil {
		return store.File{}, fmt.Errorf("save file %s: %w", f.ID, err)
	}
	f.Bytes = n
	if err := m.st.PutFile(ctx, f); err != nil {
		_ = os.Remove(m.path(f.ID))
		return store.File{}, fmt.Errorf("save file %s: %w", f.ID, err)
	}
	return f, nil
}

func (m *Manager) path(id string) string { return filepath.Join(m.cfg.Dir, id) }

// GetFile returns file id's record; a *Error of KindNotFound if none.
func (m *Manager) GetFile(id string) (store.File, error) {
	f, err := m.st.GetFile(id)
	if errors.Is(err, store.ErrNotFound) {
		return f, &Error{Kind: KindNotFound, Message: fmt.Sprintf("no file %q", id)}
	}
	return f, err
}

// ListFiles lists files, newest first (see store.ListFiles).
func (m *Manager) ListFiles(purpose, after string, limit int) ([]store.File, error) {
	return m.st.ListFiles(purpose, after, limit)
}

// OpenFile opens the content of file id; the caller closes it.
func (m *Manager) OpenFile(id string) (store.File, *os.File, error) {
	f, err := m.GetFile(id)
	if err != nil {
		return f, nil, err
	}
	fh, err := os.Open(m.path(f.ID))
	if err != nil {
		return f, nil, fmt.Errorf("open file %s: %w", f.ID, err)
	}
	return f, fh, nil
}

// DeleteFile removes file id's record, then its content.
func (m *Manager) DeleteFile(id string) (store.File, error) {
	f, err := m.st.DeleteFile(id)
	if errors.Is(err, store.ErrNotFound) {
		return f, &Error{Kind: KindNotFound, Message: fmt.Sprintf("no file %q", id)}
	}
	if err != nil {
		return f, err
	}
	if err := os.Remove(m.path(f.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("remove file content", "file_id", f.ID, "err", err)
	}
	return f, nil
}
