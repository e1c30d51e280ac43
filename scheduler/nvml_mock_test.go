//go:build !nonvml

package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/store"
	"github.com/vramcram/vramcram/vram"
)

// mockGPU is go-nvml's mock library answering with what the fake engines
// hold, as the driver would: per-process memory and free memory, with an
// exited engine's memory coming back only after the launcher's release delay.
func mockGPU(l *fakeLauncher, totalMB int, otherMB int) *mock.Interface {
	dev := &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "Mock GPU", nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-mock", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			l.mu.Lock()
			defer l.mu.Unlock()
			used, _ := l.held(time.Now())
			used += otherMB
			return nvml.Memory{Total: uint64(totalMB) << 20, Free: uint64(totalMB-used) << 20, Used: uint64(used) << 20}, nvml.SUCCESS
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			l.mu.Lock()
			defer l.mu.Unlock()
			_, byPID := l.held(time.Now())
			procs := []nvml.ProcessInfo{{Pid: 99, UsedGpuMemory: uint64(otherMB) << 20}}
			for pid, mb := range byPID {
				procs = append(procs, nvml.ProcessInfo{Pid: uint32(pid), UsedGpuMemory: uint64(mb) << 20})
			}
			return procs, nvml.SUCCESS
		},
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED },
	}
	return &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(int) (nvml.Device, nvml.Return) {
			return dev, nvml.SUCCESS
		},
	}
}

// The scheduler on vram's NVML meter over go-nvml's mock: memory of other
// processes narrows the budget, measured figures replace the configured
// one, and a load waits until the evicted engine's memory is back.
func TestScheduler_OnMockedNVML(t *testing.T) {
	real := map[string]int{"a": 5000, "b": 3000}
	st, err := store.Open(t.TempDir()+"/q.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := newFakeLauncher(10000, real)
	l.releaseDelay = 300 * time.Millisecond
	meter, err := vram.OpenNVML(mockGPU(l, 10000, 2500), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer meter.Close()
	cfg := Config{TotalMB: 10000, MeterInterval: 10 * time.Millisecond, ReleasePoll: 10 * time.Millisecond, Policy: PolicyFIFO,
		Models: []Model{{Name: "a", Kind: engine.KindLLM, VRAMMB: 3000, Slots: 1}, {Name: "b", Kind: engine.KindLLM, VRAMMB: 3000, Slots: 1}}}
	s, err := New(cfg, st, l, meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	defer s.Stop(context.Background())
	b := &bundle{t: t, st: st, l: l, sched: s}

	b.wait(b.submit("a", "x", 0), store.JobStateCompleted)
	snap := b.until("a measured", func(s Snapshot) bool { return s.Models[0].MeasuredMB == 5000 })
	if snap.Models[0].ReservedMB != 5000 || snap.NotOursMB != 2500 || snap.VRAMSource != "nvml" {
		t.Fatalf("snapshot %+v: want a's 5000 MiB measured in the ledger and 2500 MiB not ours", snap)
	}
	// b's 3000 beside a's measured 5000 and 2500 not ours exceeds 10000
	// (with a's configured 3000 it would have fitted):
	// a must go, and b must start only once a's memory is back.
	b.wait(b.submit("b", "y", 0), store.JobStateCompleted)
	l.checkWaitedForRelease(t, "a", "b")
}
