//go:build !nonvml

package vram

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

// dgx returns go-nvml's DGX A100 mock cut down to n GPUs, each with a
// compute process of 1000 MiB × (index+1) and nothing else.
func dgx(n int) *dgxa100.Server {
	s := dgxa100.New()
	s.Devices = s.Devices[:n]
	for i, d := range s.Devices {
		dev := d.(*dgxa100.Device)
		pid := uint32(100 + i)
		used := uint64(i+1) * 1000 * mib
		dev.MemoryInfo = nvml.Memory{Total: 40960 * mib, Free: 40960*mib - used, Used: used}
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: pid, UsedGpuMemory: used}}, nvml.SUCCESS
		}
		dev.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	}
	return s
}

func closeAll(t *testing.T, devs []Device) {
	t.Cleanup(func() {
		for _, d := range devs {
			if err := d.Meter.Close(); err != nil {
				t.Error(err)
			}
		}
	})
}

func TestOpenAllNVML_TwoAndFourGPUs(t *testing.T) {
	for _, n := range []int{2, 4} {
		s := dgx(n)
		devs, err := OpenAllNVML(s, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		closeAll(t, devs)
		if len(devs) != n {
			t.Fatalf("%d devices, want %d", len(devs), n)
		}
		for i, d := range devs {
			want := s.Devices[i].(*dgxa100.Device).UUID
			if d.Index != i || d.UUID != want || d.ID() != want || d.TotalMB != 40960 || d.Name == "" {
				t.Fatalf("device %d = %+v", i, d)
			}
			r, err := d.Meter.Read(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if mb, ok := r.Held(100 + i); !ok || mb != (i+1)*1000 {
				t.Fatalf("device %d: pid %d holds %d (%v); readings are not per device", i, 100+i, mb, ok)
			}
			if _, ok := r.Held(100 + (i+1)%n); ok {
				t.Fatalf("device %d lists another device's process", i)
			}
		}
	}
}

func TestOpenDevices_SpecsPickByIndexOrUUID(t *testing.T) {
	s := dgx(4)
	uuid3 := s.Devices[3].(*dgxa100.Device).UUID
	open := func(*slog.Logger) ([]Device, error) { return OpenAllNVML(s, nil) }
	devs, src, err := openDevices([]DeviceSpec{{UUID: uuid3}, {Index: 1}}, 0, slog.New(slog.DiscardHandler), open)
	if err != nil || src != SourceNVML {
		t.Fatal(src, err)
	}
	closeAll(t, devs)
	if len(devs) != 2 || devs[0].Index != 3 || devs[1].Index != 1 {
		t.Fatalf("picked %+v, want GPUs 3 and 1 in that order", devs)
	}
	_, _, err = openDevices([]DeviceSpec{{Index: 7, TotalMB: 0}}, 0, slog.New(slog.DiscardHandler), open)
	if err == nil {
		t.Fatal("a spec naming no GPU and no size was accepted")
	}
}

func TestOpenDevices_WithoutNVMLUsesConfiguredSizes(t *testing.T) {
	fail := func(*slog.Logger) ([]Device, error) { return nil, ErrNVMLUnavailable }
	devs, src, err := openDevices([]DeviceSpec{{Index: 0, TotalMB: 24576}, {Index: 1, UUID: "GPU-b", TotalMB: 12288}}, 0, nil2(), fail)
	if err != nil || src != SourceConfig || len(devs) != 2 {
		t.Fatal(devs, src, err)
	}
	if devs[0].ID() != "0" || devs[1].ID() != "GPU-b" || devs[1].TotalMB != 12288 {
		t.Fatalf("devices %+v", devs)
	}
	one, _, err := openDevices(nil, 8000, nil2(), fail)
	if err != nil || len(one) != 1 || one[0].TotalMB != 8000 {
		t.Fatal(one, err)
	}
	if _, _, err := openDevices([]DeviceSpec{{Index: 0}}, 8000, nil2(), fail); !errors.Is(err, ErrNVMLUnavailable) {
		t.Fatalf("a device without a size and without NVML: %v", err)
	}
}

func nil2() *slog.Logger { return slog.New(slog.DiscardHandler) }

// One GPU that cannot be read (fallen off the bus) is left out; the others
// keep their NVML meters (NVML was dropped for all of them, and with
// vram.devices naming the healthy one the daemon did not start).
func TestOpenDevices_OneLostGPULeavesTheOthers(t *testing.T) {
	s := dgx(2)
	s.Devices[1].(*dgxa100.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	log := slog.New(slog.DiscardHandler)
	open := func(*slog.Logger) ([]Device, error) { return OpenAllNVML(s, log) }
	for _, specs := range [][]DeviceSpec{{{Index: 0}}, nil} {
		devs, src, err := openDevices(specs, 40960, log, open)
		if err != nil || src != SourceNVML || len(devs) != 1 || devs[0].Index != 0 {
			t.Errorf("specs %v: %d devices, source %q, %v; want GPU 0 on NVML", specs, len(devs), src, err)
		}
		for _, d := range devs {
			_ = d.Meter.Close()
		}
	}
	if _, _, err := openDevices([]DeviceSpec{{Index: 1}}, 0, log, open); err == nil {
		t.Error("vram.devices naming the lost GPU: no error")
	}
}
