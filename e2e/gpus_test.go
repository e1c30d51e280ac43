package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// engineEnv reads one variable of a process's environment.
func engineEnv(pid int, key string) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "", false
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Two GPUs from the config (no NVML here): models land on both, an eviction
// stays on the GPU that needs room, and each engine sees its GPU in
// CUDA_VISIBLE_DEVICES.
func TestE2E_TwoGPUs(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeSchedConfig(t, engine, 10000, "policy: batch",
		schedModel{name: "a", mb: 6000},
		schedModel{name: "b", mb: 4000},
		schedModel{name: "c", mb: 4000, extra: "gpus: [1]"},
		schedModel{name: "split", mb: 6000, extra: "gpus: [0, 1]"})
	cfg, _ := os.ReadFile(s.cfg)
	cfg = []byte(strings.Replace(string(cfg), "vram: {total_mb: 10000, safety_margin_mb: 1000}",
		"vram: {total_mb: 10000, safety_margin_mb: 1000, devices: [{index: 0, total_mb: 10000}, {index: 1, uuid: GPU-test-b, total_mb: 6000}]}", 1))
	if err := os.WriteFile(s.cfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, s.cfg, s.port)
	events := followEvents(t, d.url, map[string]int{}, 1<<30)

	placement := func(name string) []string {
		var out []string
		m := d.modelState(name)
		pl, _ := m["placement"].([]any)
		for _, p := range pl {
			out = append(out, p.(map[string]any)["id"].(string))
		}
		return out
	}
	cuda := func(name string) string {
		pid := int(d.modelState(name)["pid"].(float64))
		v, ok := engineEnv(pid, "CUDA_VISIBLE_DEVICES")
		if !ok {
			t.Fatalf("engine of %s (pid %d) has no CUDA_VISIBLE_DEVICES", name, pid)
		}
		return v
	}
	run := func(model string) {
		t.Helper()
		if js := d.waitJob(d.submit(model, "hi "+model), 30*time.Second); js.Status != "completed" {
			t.Fatalf("%s job: %+v", model, js)
		}
	}

	run("a") // 6000: GPU 0 (budget 9000) has the room, GPU 1 (5000) does not
	run("b") // 4000: only GPU 1 can take it beside a
	if pa, pb := placement("a"), placement("b"); strings.Join(pa, ",") != "0" || strings.Join(pb, ",") != "GPU-test-b" {
		t.Fatalf("placement a %v, b %v; want a on GPU 0 and b on GPU 1", pa, pb)
	}
	if got := cuda("a"); got != "0" {
		t.Fatalf("a sees CUDA_VISIBLE_DEVICES=%q", got)
	}
	if got := cuda("b"); got != "GPU-test-b" {
		t.Fatalf("b sees CUDA_VISIBLE_DEVICES=%q", got)
	}
	var health struct {
		Devices []map[string]any `json:"devices"`
	}
	d.do("GET", "/health", nil, &health)
	if len(health.Devices) != 2 || health.Devices[0]["vram_reserved_mb"].(float64) != 6000 || health.Devices[1]["vram_reserved_mb"].(float64) != 4000 {
		t.Fatalf("health devices %v", health.Devices)
	}

	run("c") // pinned to GPU 1: b must go, a (GPU 0, older) stays
	for _, ev := range events.ofType("model_evicted") {
		if ev["model"] == "a" {
			t.Fatalf("a on GPU 0 was evicted for a model of GPU 1: %v", ev)
		}
	}
	d.waitModel("b", "unloaded", 10*time.Second)
	if st := d.modelState("a")["state"]; st != "ready" {
		t.Fatalf("a is %v", st)
	}

	run("split") // 3000 on each GPU: a (6000 of 9000) and c (4000 of 5000) make room
	if got := cuda("split"); got != "0,GPU-test-b" {
		t.Fatalf("split sees CUDA_VISIBLE_DEVICES=%q", got)
	}
	if pl := placement("split"); len(pl) != 2 {
		t.Fatalf("split placed on %v", pl)
	}
	d.do("GET", "/health", nil, &health)
	for _, dev := range health.Devices {
		if dev["vram_reserved_mb"].(float64) > dev["vram_budget_mb"].(float64) {
			t.Fatalf("GPU over budget: %v", dev)
		}
	}
}
