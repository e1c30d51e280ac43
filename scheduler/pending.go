package scheduler

import "time"

// Cancels that come before the loop knows the run: a slot claims a job and
// starts it at once, then reports jobStarted; a cancel handled in between
// finds no run. The loop keeps such cancels briefly and applies them when
// the job's jobStarted arrives. A forced stop is applied the same way to a
// run that starts after it.

const (
	// earlyCancelTTL is how long an early cancel waits for its run: far
	// longer than a claim takes, so that a busy loop loses none.
	earlyCancelTTL = time.Minute
	// maxEarlyCancels bounds the cancels kept (of jobs that were queued,
	// not claimed, most never start).
	maxEarlyCancels = 4096
)

// noteEarlyCancel keeps a cancel of job id, which runs nowhere yet.
func (s *Scheduler) noteEarlyCancel(id string) {
	st, now := s.st, s.now()
	if len(st.early) >= maxEarlyCancels {
		for k, at := range st.early {
			if now.Sub(at) > earlyCancelTTL || len(st.early) >= maxEarlyCancels {
				delete(st.early, k)
			}
		}
	}
	st.early[id] = now
}

// cancelIfDue cancels run, which has just been registered, when a cancel
// came for it before, or when the stop was forced meanwhile.
func (s *Scheduler) cancelIfDue(run *jobRun) {
	st := s.st
	if at, ok := st.early[run.id]; ok {
		delete(st.early, run.id)
		if s.now().Sub(at) <= earlyCancelTTL {
			run.cancel(errCancelled)
			return
		}
	}
	if st.forced {
		run.cancel(errShutdown)
	}
}
