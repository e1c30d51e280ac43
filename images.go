package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/store"
)

// pruneImages removes the image directories (dir/JOB_ID/) that no job
// needs any more: those of jobs that retention deleted, and those left by
// failed or cancelled jobs (a job cancelled just as its images were written
// keeps them). It returns how many it removed.
func pruneImages(dir string, st interface {
	Get(id string) (store.Job, error)
}) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune images: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !store.ValidID(id) {
			continue
		}
		j, err := st.Get(id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			continue
		case j.State != store.JobStateFailed && j.State != store.JobStateCancelled:
			continue
		}
		if err := sdcpp.RemoveJobImages(dir, id); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// logPrune runs pruneImages and logs what it did.
func logPrune(dir string, st jobQueue, log *slog.Logger) {
	n, err := pruneImages(dir, st)
	if err != nil {
		log.Warn("retention: prune images", "err", err)
	}
	if n > 0 {
		log.Info("retention removed image directories", "jobs", n)
	}
}
