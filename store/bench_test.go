package store

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmarks run with fsync (NoSync false) on a file in b.TempDir(): what
// they measure is mostly how well group commit shares fsyncs.
//
//	go test -run '^$' -bench . -benchtime 3s ./store/

var benchPrompt = strings.Repeat("Write a haiku about GPUs. ", 8) // ~200 bytes

func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

func benchJob() *Job {
	return &Job{ID: NewID(), Model: "m", Type: "llm", Prompt: benchPrompt, Params: []byte(`{"max_tokens":128}`)}
}

// reportThroughput adds jobs/s and jobs/commit.
func reportThroughput(b *testing.B, jobs int, elapsed time.Duration, commits uint64) {
	b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
	if commits > 0 {
		b.ReportMetric(float64(jobs)/float64(commits), "jobs/commit")
	}
}

// BenchmarkEnqueue: one op is one job enqueued (and fsync'd) by one of
// `submitters` concurrent callers.
func BenchmarkEnqueue(b *testing.B) {
	for _, submitters := range []int{1, 64} {
		b.Run(fmt.Sprintf("submitters=%d", submitters), func(b *testing.B) {
			s := openBench(b)
			ctx := context.Background()
			work := make(chan struct{})
			var wg sync.WaitGroup
			for range submitters {
				wg.Go(func() {
					for range work {
						if err := s.Enqueue(ctx, benchJob()); err != nil {
							b.Error(err)
						}
					}
				})
			}
			c0 := s.commits.Load()
			n := 0
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				work <- struct{}{}
				n++
			}
			close(work)
			wg.Wait()
			reportThroughput(b, n, time.Since(start), s.commits.Load()-c0)
		})
	}
}

// BenchmarkClaimComplete: one op is one job claimed and completed (two
// commits' worth of work) by one of 4 concurrent workers, with a 1 KiB result.
// The queue is refilled, timer stopped, whenever it runs dry.
func BenchmarkClaimComplete(b *testing.B) {
	const (
		workers = 4
		chunk   = 4096
	)
	s := openBench(b)
	result := bytes.Repeat([]byte("x"), 1024)
	work := make(chan struct{})
	var inflight, wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range work {
				j, err := s.Claim("m")
				if err == nil {
					err = s.Complete(j.ID, result)
				}
				if err != nil {
					b.Error(err)
				}
				inflight.Done()
			}
		})
	}
	fill := func() {
		var fw sync.WaitGroup
		per := chunk / 64
		for range 64 {
			fw.Go(func() {
				for range per {
					if err := s.Enqueue(context.Background(), benchJob()); err != nil {
						b.Error(err)
					}
				}
			})
		}
		fw.Wait()
	}

	n, left := 0, 0
	var busy time.Duration
	var commits, c0 uint64
	var start time.Time
	segmentDone := func() {
		inflight.Wait()
		busy += time.Since(start)
		commits += s.commits.Load() - c0
	}
	b.ReportAllocs()
	for b.Loop() {
		if left == 0 {
			if n > 0 {
				segmentDone()
			}
			b.StopTimer()
			fill()
			left = chunk
			b.StartTimer()
			start, c0 = time.Now(), s.commits.Load()
		}
		inflight.Add(1)
		work <- struct{}{}
		n++
		left--
	}
	segmentDone()
	close(work)
	wg.Wait()
	reportThroughput(b, n, busy, commits)
}
