package store_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/store/storetest"
)

func bboltOptions(o storetest.Options) store.Options {
	return store.Options{NoSync: true, MaxQueued: o.MaxQueued, Aging: o.Aging, NowFunc: o.NowFunc}
}

func openBolt(t *testing.T, path string, o storetest.Options) *store.Store {
	t.Helper()
	s, err := store.Open(path, bboltOptions(o))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("check at cleanup: %v", err)
		}
		_ = s.Close()
	})
	return s
}

// TestConformance runs the queue contract's suite on bbolt. A crash is the
// daemon dying and the next one opening the same file.
func TestConformance(t *testing.T) {
	storetest.Exercise(t, storetest.Harness{
		Open: func(t *testing.T, o storetest.Options) storetest.Queue {
			return openBolt(t, filepath.Join(t.TempDir(), "vramcram.db"), o)
		},
		Crash: func(t *testing.T, q storetest.Queue, o storetest.Options) storetest.Queue {
			s := q.(*store.Store)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openBolt(t, s.Path(), o)
		},
	})
}
