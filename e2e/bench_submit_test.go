package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// BenchmarkSubmit measures the submit path of the built daemon: POST /jobs
// over HTTP with 1, 64 and 256 concurrent keep-alive clients. One op is one
// job accepted (202), durably queued (fsync on). In the same run, in rounds
// interleaved with the accepted ones (timer stopped), the same clients send
// as many requests for an unknown model, refused (404) by admission before
// any write: that rate is the HTTP ceiling of the machine for this path.
// Reported: jobs/s, ceiling_req/s, their ratio, and jobs/fsync: accepted
// jobs per bbolt commit (each commit syncs the file), from the growth of the
// file's transaction id, read once the daemon has stopped (its own few
// commits at start and stop count too). Also reported: the daemon's CPU
// time (user and system, from /proc) per accepted job and per refused
// request, cpu_us/job and cpu_us/refused: on a machine whose CPUs are
// shared, the rates follow the CPU the daemon gets, while these follow
// only the work it does. idle%_accepting and idle%_refusing are the share
// of the machine's CPU time (all cores, from /proc/stat) left idle during
// each kind of round: the refused rounds keep both cores busy, while the
// accepted ones leave some idle while every client waits for the same
// commit's fsync. The model's engine takes an hour to
// load, so nothing else writes while the clients run. Binaries are built
// without the race detector.
//
//	go test -run '^$' -bench Submit -benchtime 3s ./e2e
func BenchmarkSubmit(b *testing.B) {
	if testing.Short() {
		b.Skip("builds and starts the daemon")
	}
	bin, engine := buildPlain(b)
	for _, clients := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			d := startSubmitDaemon(b, bin, engine)
			tx0 := d.stopAndReadTxID(b)
			d.start(b)
			const rounds = 4
			per := max(1, (b.N+rounds-1)/rounds)
			var acc, ref time.Duration
			var accUse, refUse cpuUse
			accepted, refused := 0, 0
			b.ResetTimer()
			for range rounds {
				m0 := d.mark()
				acc += d.fire(b, clients, per, "bench", http.StatusAccepted)
				m1 := d.mark()
				accepted += per
				b.StopTimer()
				ref += d.fire(b, clients, per, "no-such-model", http.StatusNotFound)
				refused += per
				accUse, refUse = accUse.add(m0, m1), refUse.add(m1, d.mark())
				b.StartTimer()
			}
			b.StopTimer()
			commits := d.stopAndReadTxID(b) - tx0
			jobs, ceiling := float64(accepted)/acc.Seconds(), float64(refused)/ref.Seconds()
			b.ReportMetric(jobs, "jobs/s")
			b.ReportMetric(ceiling, "ceiling_req/s")
			b.ReportMetric(jobs/ceiling, "ratio")
			accUse.report(b, accepted, "job", "idle%_accepting")
			refUse.report(b, refused, "refused", "idle%_refusing")
			if commits > 0 {
				b.ReportMetric(float64(accepted)/float64(commits), "jobs/fsync")
			}
		})
	}
}

// submitDaemon is one daemon for BenchmarkSubmit, on its own data dir.
type submitDaemon struct {
	bin, cfg, url, db string
	cmd               *exec.Cmd
	client            *http.Client
	tr                *http.Transport
}

func startSubmitDaemon(b *testing.B, bin, engine string) *submitDaemon {
	b.Helper()
	dir := b.TempDir()
	model := filepath.Join(dir, "bench.gguf")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		b.Fatal(err)
	}
	port := freePortB(b)
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s}
vram: {total_mb: 8000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
agents: {worker_ready_timeout_seconds: 7200}
scheduling: {max_queue: 100000000}
logging: {level: warn, format: json}
models:
  llm:
    - {name: bench, model_path: %s, vram_mb: 4000, config: {parallel: 2, context_size: 512, extra_args: [--test-load-delay, 3600s]}}
`, port, filepath.Join(dir, "data"), engine, model)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}
	d := &submitDaemon{bin: bin, cfg: path, url: fmt.Sprintf("http://127.0.0.1:%d", port), db: filepath.Join(dir, "data", storeFile),
		tr: tr, client: &http.Client{Transport: tr, Timeout: time.Minute}}
	b.Cleanup(func() {
		tr.CloseIdleConnections()
		if d.cmd != nil {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
		}
	})
	d.start(b)
	return d
}

func (d *submitDaemon) start(b *testing.B) {
	b.Helper()
	d.cmd = exec.Command(d.bin, "-config", d.cfg)
	d.cmd.Env = cleanEnv()
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := d.client.Get(d.url + "/health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon not healthy after 60s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopAndReadTxID stops the daemon and returns its store's last
// transaction id: one per commit.
func (d *submitDaemon) stopAndReadTxID(b *testing.B) uint64 {
	b.Helper()
	d.tr.CloseIdleConnections()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		b.Fatalf("daemon: %v", err)
	}
	d.cmd = nil
	db, err := bbolt.Open(d.db, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	return uint64(tx.ID())
}

// cpuMark is a reading of the daemon's CPU time (user and system, all
// threads, from /proc/PID/stat) and of the machine's idle and total CPU
// time (/proc/stat), in clock ticks of 1/100 s; zero where /proc cannot
// tell.
type cpuMark struct{ daemon, idle, total int64 }

func (d *submitDaemon) mark() cpuMark {
	var m cpuMark
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid)); err == nil {
		// The fields after the command name, which is in parentheses: utime
		// and stime are the 12th and 13th.
		if i := bytes.LastIndexByte(raw, ')'); i >= 0 {
			m.daemon = sumFields(strings.Fields(string(raw[i+1:])), 11, 13)
		}
	}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		// "cpu user nice system idle iowait irq softirq steal ...": idle and
		// iowait are the 4th and 5th numbers.
		f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
		if len(f) > 1 {
			m.idle, m.total = sumFields(f[1:], 3, 5), sumFields(f[1:], 0, len(f)-1)
		}
	}
	return m
}

// sumFields adds the integers f[from:to]; 0 if any is missing or not one.
func sumFields(f []string, from, to int) int64 {
	if len(f) < to {
		return 0
	}
	var sum int64
	for _, s := range f[from:to] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0
		}
		sum += n
	}
	return sum
}

// cpuUse adds up what the marks around each round show.
type cpuUse struct{ daemon, idle, total int64 }

func (u cpuUse) add(from, to cpuMark) cpuUse {
	return cpuUse{u.daemon + to.daemon - from.daemon, u.idle + to.idle - from.idle, u.total + to.total - from.total}
}

// report adds cpu_us/<per> (the daemon's CPU per request) and idle (the
// machine's idle share, in percent) to b's metrics, where they are known.
func (u cpuUse) report(b *testing.B, n int, per, idle string) {
	if u.daemon > 0 {
		b.ReportMetric(float64(u.daemon)*1e4/float64(n), "cpu_us/"+per)
	}
	if u.total > 0 {
		b.ReportMetric(100*float64(u.idle)/float64(u.total), idle)
	}
}

// fire sends n POST /jobs for model from clients goroutines and returns the
// wall time; every answer must have status want.
func (d *submitDaemon) fire(b *testing.B, clients, n int, model string, want int) time.Duration {
	body := []byte(fmt.Sprintf(`{"model":%q,"prompt":%q}`, model, strings.Repeat("Write a haiku about GPUs. ", 8)))
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := d.post(body, want); err != nil {
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

func (d *submitDaemon) post(body []byte, want int) error {
	resp, err := d.client.Post(d.url+"/jobs", "application/json", bytes.NewReader(body))
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
