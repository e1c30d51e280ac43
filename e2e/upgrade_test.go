package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2E_UpgradeKeepsTheQueue starts the daemon on the store file written
// by schema version 1 (store/testdata/v1.db): it migrates it, keeping a
// backup, runs the queued jobs (and the one a crash left running) and
// serves the finished ones with their results.
func TestE2E_UpgradeKeepsTheQueue(t *testing.T) {
	bin, engine := buildBinaries(t)
	dir := t.TempDir()
	port := freePort(t)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	copyTestFile(t, filepath.Join("store", "testdata", "v1.db"), filepath.Join(data, storeFile))
	var models strings.Builder
	for _, name := range []string{"tiny", "sd"} { // v1.db's models (all its jobs are llm jobs)
		path := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(path, []byte("stand-in"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&models, "    - name: %s\n      model_path: %s\n      vram_mb: 1000\n      config: {parallel: 2, context_size: 512}\n", name, path)
	}
	cfg := fmt.Sprintf(`server: {host: 127.0.0.1, port: %d, metrics_port: 0}
storage: {data_dir: %s, retention_hours: 0}  # v1.db's jobs finished in 2026-07: keep them
vram: {total_mb: 10000, safety_margin_mb: 1000}
inference: {llama_server_path: %s}
logging: {level: debug, format: json}
models:
  llm:
%s`, port, data, engine, models.String())
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, cfgPath, port)

	for _, id := range []string{"v1-job-04", "v1-job-06", "v1-job-07", "v1-job-08", "v1-img-01", "v1-img-02"} {
		if js := d.waitJob(id, 60*time.Second); js.Status != "completed" {
			t.Fatalf("v1 job %s: %+v, want completed", id, js)
		}
		if got, want := d.resultText(id), "echo: prompt of "+id; got != want {
			t.Errorf("v1 job %s: result %q, want %q", id, got, want)
		}
	}
	for id, want := range map[string]string{"v1-job-01": "hello from v1", "v1-job-02": "second result"} {
		if got := d.resultText(id); got != want {
			t.Errorf("v1 job %s: result %q, want %q", id, got, want)
		}
	}
	if js := d.waitJob("v1-job-03", time.Second); js.Status != "failed" || js.Error != "engine exited: code 1" {
		t.Errorf("v1 failed job: %+v", js)
	}
	if _, err := os.Stat(filepath.Join(data, storeFile+".bak-v1")); err != nil {
		t.Errorf("no backup of the v1 file: %v", err)
	}
	if !strings.Contains(d.logs.String(), "store schema migrated") {
		t.Error("the log does not mention the migration")
	}
}

func copyTestFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
