package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store"
)

// envInt reads a positive integer from the environment, else def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestE2E_CrashStress submits jobs across three models while killing
// VramCram with SIGKILL at random moments and restarting it. Afterwards every
// accepted job is completed with the right text (or failed with a reason),
// no engine of a killed run survives the restart, and the store passes its
// consistency check. make test runs STRESS_JOBS=150 STRESS_KILLS=4; make
// stress runs 1000 jobs and 20 kills.
func TestE2E_CrashStress(t *testing.T) {
	bin, engine := buildBinaries(t)
	nJobs, nKills := envInt("STRESS_JOBS", 150), envInt("STRESS_KILLS", 4)
	s := writeSchedConfig(t, engine, 10000, "policy: batch, max_wait_seconds: 1, max_attempts: 50",
		schedModel{name: "alpha", mb: 4000, slots: 2, engine: []string{"--test-token-delay", "3ms"}},
		schedModel{name: "beta", mb: 4000, slots: 2, engine: []string{"--test-token-delay", "3ms"}},
		schedModel{name: "gamma", mb: 4000, slots: 2, engine: []string{"--test-token-delay", "3ms"}})
	url := fmt.Sprintf("http://127.0.0.1:%d", s.port)
	client := &http.Client{Timeout: 5 * time.Second}

	var mu sync.Mutex
	accepted := map[string]string{} // job id → prompt
	submitted := make(chan struct{})
	go func() { // the submitter keeps going through the crashes
		defer close(submitted)
		for i := 0; i < nJobs; {
			p := fmt.Sprintf("stress %d %s", i, words(3+i%7))
			body, _ := json.Marshal(map[string]any{"model": []string{"alpha", "beta", "gamma"}[i%3], "prompt": p})
			resp, err := client.Post(url+"/jobs", "application/json", bytes.NewReader(body))
			if err != nil {
				time.Sleep(20 * time.Millisecond) // down: try again
				continue
			}
			var out struct {
				JobID string `json:"job_id"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				mu.Lock()
				accepted[out.JobID] = p
				mu.Unlock()
				i++
			}
			time.Sleep(time.Duration(rand.IntN(8)) * time.Millisecond)
		}
	}()

	d := startDaemon(t, bin, s.cfg, s.port)
	survivors := 0
	for k := range nKills {
		time.Sleep(time.Duration(150+rand.IntN(500)) * time.Millisecond)
		before := engineProcs(engine)
		d.signal(syscall.SIGKILL, 10*time.Second)
		d = startDaemon(t, bin, s.cfg, s.port)
		for pid := range before {
			if _, alive := engineProcs(engine)[pid]; alive {
				survivors++
				t.Errorf("kill %d: engine %d of the killed run survived the restart", k+1, pid)
			}
		}
	}
	<-submitted

	mu.Lock()
	defer mu.Unlock()
	completed, failed := 0, 0
	for id, p := range accepted {
		js := d.waitJob(id, 120*time.Second)
		switch js.Status {
		case "completed":
			completed++
			if got, want := d.resultText(id), strings.Join(strings.Fields("echo: "+p), " "); got != want {
				t.Fatalf("job %s: text %q, want %q", id, got, want)
			}
		case "failed":
			failed++
			if js.Error == "" {
				t.Fatalf("job %s failed without a reason", id)
			}
		default:
			t.Fatalf("job %s ended %s", id, js.Status)
		}
	}
	d.signal(syscall.SIGTERM, 30*time.Second)
	if procs := engineProcs(engine); len(procs) != 0 {
		t.Fatalf("engines left after SIGTERM: %v", procs)
	}
	st, err := store.Open(filepath.Join(s.dir, "data", storeFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Fatalf("store check after %d kills: %v", nKills, err)
	}
	t.Logf("%d kills: %d jobs accepted, %d completed, %d failed with a reason, 0 lost; %d engines survived a restart",
		nKills, len(accepted), completed, failed, survivors)
}
