package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/store/redisstore"
	"github.com/vramcram/vramcram/store/redisstore/redistest"
)

// The benchmarks run against a real redis-server started for them with
// appendonly yes and appendfsync always (every write on disk before the
// answer), the setting docs/fleet.md asks for when no acknowledged job may
// be lost.
//
//	go test -run '^$' -bench . ./store/redisstore/

var benchPrompt = strings.Repeat("Write a haiku about GPUs. ", 8) // ~200 bytes

func openBench(b *testing.B) *redisstore.Store {
	b.Helper()
	srv := redistest.Start(b)
	s, err := redisstore.Open(context.Background(), redisstore.Options{URL: srv.URL(), Node: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func benchJob() *store.Job {
	return &store.Job{ID: store.NewID(), Model: "m", Type: "llm", Prompt: benchPrompt, Params: []byte(`{"max_tokens":128}`)}
}

// BenchmarkEnqueue: one op is one job enqueued by one of `clients`
// concurrent callers; jobs/s is the fleet's submit throughput.
func BenchmarkEnqueue(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := openBench(b)
			work := make(chan struct{})
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					for range work {
						if err := s.Enqueue(context.Background(), benchJob()); err != nil {
							b.Error(err)
						}
					}
				})
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
		})
	}
}

// BenchmarkClaim: one op is one claim of a queued job (then completed
// outside the timer); it reports the median and 99th percentile claim
// latency.
func BenchmarkClaim(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := s.Enqueue(ctx, benchJob()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		j, err := s.Claim("m")
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Complete(j.ID, []byte("ok")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
