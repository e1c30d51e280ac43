package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// BenchmarkSubmit measures the submit path: POST /jobs over HTTP with 1, 64
// and 256 concurrent keep-alive clients against the real API, scheduler
// admission and store (fsync on, a file in b.TempDir()). One op is one job
// accepted (202), durably queued. In the same run, in rounds interleaved with
// the accepted ones (timer stopped), the same clients send as many requests
// for an unknown model, refused (404) by admission before any write: that
// rate is the HTTP ceiling of the machine for this path. Reported: jobs/s,
// ceiling_req/s, their ratio, and jobs/fsync (jobs per bbolt commit; each
// commit syncs the file). The model never loads (its engine launch blocks),
// so nothing else writes to the store.
//
//	go test -run '^$' -bench Submit -benchtime 3s .
func BenchmarkSubmit(b *testing.B) {
	for _, clients := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := newSubmitHarness(b)
			const rounds = 4
			per := max(1, (b.N+rounds-1)/rounds)
			var acc, ref time.Duration
			accepted, refused := 0, 0
			c0 := h.st.Commits()
			b.ResetTimer()
			for range rounds {
				acc += h.fire(b, clients, per, "bench", http.StatusAccepted)
				accepted += per
				b.StopTimer()
				ref += h.fire(b, clients, per, "no-such-model", http.StatusNotFound)
				refused += per
				b.StartTimer()
			}
			b.StopTimer()
			commits := h.st.Commits() - c0
			jobs, ceiling := float64(accepted)/acc.Seconds(), float64(refused)/ref.Seconds()
			b.ReportMetric(jobs, "jobs/s")
			b.ReportMetric(ceiling, "ceiling_req/s")
			b.ReportMetric(jobs/ceiling, "ratio")
			if commits > 0 {
				b.ReportMetric(float64(accepted)/float64(commits), "jobs/fsync")
			}
		})
	}
}

// submitHarness is the API, scheduler and store of one benchmark run,
// served on a loopback port.
type submitHarness struct {
	st     *store.Store
	url    string
	client *http.Client
}

func newSubmitHarness(b *testing.B) *submitHarness {
	b.Helper()
	st, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sched, err := scheduler.New(scheduler.Config{TotalMB: 24000, Models: []scheduler.Model{{Name: "bench", Type: "llm", VRAMMB: 4000, Slots: 4}}},
		st, blockedLauncher{}, nil, log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sched.Start(ctx)
	srv := api.New(api.Config{ModelTypes: map[string]string{"bench": "llm"}, Logger: log}, sched, st)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}
	b.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		_ = hs.Close()
		cancel()
		_ = sched.Stop(context.Background())
		if err := st.Close(); err != nil {
			b.Error(err)
		}
	})
	return &submitHarness{st: st, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// fire sends n POST /jobs for model from clients goroutines and returns the
// wall time; every answer must have status want.
func (h *submitHarness) fire(b *testing.B, clients, n int, model string, want int) time.Duration {
	body := []byte(fmt.Sprintf(`{"model":%q,"prompt":%q}`, model, strings.Repeat("Write a haiku about GPUs. ", 8)))
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := h.post(body, want); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return elapsed
}

func (h *submitHarness) post(body []byte, want int) error {
	resp, err := h.client.Post(h.url+"/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("POST /jobs: HTTP %d, want %d", resp.StatusCode, want)
	}
	return nil
}

// blockedLauncher never finishes a launch, so queued jobs stay queued.
type blockedLauncher struct{}

func (blockedLauncher) Check(scheduler.Model) error { return nil }
func (blockedLauncher) Launch(ctx context.Context, _ scheduler.Model) (scheduler.Engine, error) {
	<-ctx.Done()
	return nil, errors.New("benchmark: launches never finish")
}
