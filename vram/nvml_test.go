//go:build !nonvml

package vram

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const mib = 1 << 20

// failUnset points every nil ...Func field of the mock that m points to at a
// function that fails the test, so a call the test did not expect is
// reported by name instead of panicking (or, against the real library without
// a driver, killing the process).
func failUnset(t *testing.T, m any) {
	t.Helper()
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() || f.Kind() != reflect.Func || !f.IsNil() || !strings.HasSuffix(sf.Name, "Func") {
			continue
		}
		name := v.Type().Name() + "." + strings.TrimSuffix(sf.Name, "Func")
		ft := f.Type()
		f.Set(reflect.MakeFunc(ft, func([]reflect.Value) []reflect.Value {
			t.Errorf("unexpected call to %s", name)
			out := make([]reflect.Value, ft.NumOut())
			for j := range out {
				out[j] = reflect.Zero(ft.Out(j))
			}
			// Answer with an error where the method returns a Return.
			if n := ft.NumOut(); n > 0 && ft.Out(n-1) == reflect.TypeFor[nvml.Return]() {
				out[n-1] = reflect.ValueOf(nvml.ERROR_UNKNOWN)
			}
			return out
		}))
	}
}

// fakeGPU is a device whose answers a test changes between reads.
type fakeGPU struct {
	mu       sync.Mutex
	total    uint64
	free     uint64
	compute  []nvml.ProcessInfo
	graphics []nvml.ProcessInfo
	gfxRet   nvml.Return
	reads    int
	// onRead, when set, runs before each memory read with the read's number
	// (1-based), under mu, to change the answers.
	onRead func(n int, g *fakeGPU)
}

func (g *fakeGPU) set(fn func(g *fakeGPU)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fn(g)
}

// newMockNVML returns a library mock with one device backed by g. Every
// function the meter is not meant to call fails the test.
func newMockNVML(t *testing.T, g *fakeGPU) (*mock.Interface, *mock.Device) {
	t.Helper()
	dev := &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA Mock 80GB", nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-mock-0", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.reads++
			if g.onRead != nil {
				g.onRead(g.reads, g)
			}
			return nvml.Memory{Total: g.total, Free: g.free, Used: g.total - g.free}, nvml.SUCCESS
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			g.mu.Lock()
			defer g.mu.Unlock()
			return append([]nvml.ProcessInfo(nil), g.compute...), nvml.SUCCESS
		},
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.gfxRet != nvml.SUCCESS {
				return nil, g.gfxRet
			}
			return append([]nvml.ProcessInfo(nil), g.graphics...), nvml.SUCCESS
		},
	}
	failUnset(t, dev)
	lib := &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i != 0 {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return dev, nvml.SUCCESS
		},
	}
	failUnset(t, lib)
	return lib, dev
}

func openMock(t *testing.T, lib nvml.Interface) *NVML {
	t.Helper()
	n, err := OpenNVML(lib, 0, slogtest(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// slogtest returns a logger that writes to t.Log.
func slogtest(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestOpenMeter_InitFailsFallsBack(t *testing.T) {
	t.Parallel()
	// A library that cannot load: Init is the only call allowed.
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	failUnset(t, lib)

	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	m, src, err := openMeter(8192, log, func(log *slog.Logger) (meterCloser, error) {
		n, err := OpenNVML(lib, 0, log)
		if err != nil {
			return nil, err
		}
		return n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if src != SourceConfig {
		t.Errorf("source = %q, want %q", src, SourceConfig)
	}
	if _, ok := m.(*Static); !ok {
		t.Errorf("meter is %T, want *Static", m)
	}
	r, err := m.Read(t.Context())
	if err != nil || r.Source != SourceConfig || r.TotalMB != 8192 || r.FreeMB != 8192 {
		t.Errorf("Read = %+v, %v", r, err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := len(lib.InitCalls()); n != 1 {
		t.Errorf("Init called %d times, want 1", n)
	}
	out := logs.String()
	if n := strings.Count(out, "NVML unavailable, using vram.total_mb"); n != 1 {
		t.Errorf("fallback logged %d times, want once; logs:\n%s", n, out)
	}
	if !strings.Contains(out, "ERROR_LIBRARY_NOT_FOUND") {
		t.Errorf("log does not give the reason:\n%s", out)
	}
}

func TestOpenMeter_NoNVMLNoTotal(t *testing.T) {
	t.Parallel()
	_, _, err := openMeter(0, slogtest(t), func(*slog.Logger) (meterCloser, error) {
		return nil, ErrNVMLUnavailable
	})
	if err == nil || !errors.Is(err, ErrNVMLUnavailable) {
		t.Fatalf("err = %v, want one wrapping ErrNVMLUnavailable", err)
	}
}

func TestOpenMeter_UsesNVML(t *testing.T) {
	t.Parallel()
	g := &fakeGPU{total: 80 * 1024 * mib, free: 70 * 1024 * mib}
	lib, _ := newMockNVML(t, g)
	m, src, err := openMeter(24576, slogtest(t), func(log *slog.Logger) (meterCloser, error) {
		return OpenNVML(lib, 0, log)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if src != SourceNVML {
		t.Errorf("source = %q", src)
	}
	r, err := m.Read(t.Context())
	if err != nil || r.TotalMB != 80*1024 {
		t.Errorf("Read = %+v, %v", r, err)
	}
}

func TestOpenMeter_ReadFailsFallsBack(t *testing.T) {
	t.Parallel()
	g := &fakeGPU{total: 80 * 1024 * mib}
	lib, dev := newMockNVML(t, g)
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	m, src, err := openMeter(4096, slogtest(t), func(log *slog.Logger) (meterCloser, error) {
		return OpenNVML(lib, 0, log)
	})
	if err != nil || src != SourceConfig {
		t.Fatalf("openMeter = %v, %q, %v", m, src, err)
	}
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
}

func TestOpenNVML(t *testing.T) {
	t.Parallel()
	t.Run("InitFails", func(t *testing.T) {
		t.Parallel()
		lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
		failUnset(t, lib)
		n, err := OpenNVML(lib, 0, nil)
		if n != nil || !errors.Is(err, ErrNVMLUnavailable) || !strings.Contains(err.Error(), "ERROR_DRIVER_NOT_LOADED") {
			t.Fatalf("OpenNVML = %v, %v", n, err)
		}
	})
	t.Run("NoSuchDevice", func(t *testing.T) {
		t.Parallel()
		lib, _ := newMockNVML(t, &fakeGPU{})
		n, err := OpenNVML(lib, 3, nil)
		if n != nil || !errors.Is(err, ErrNVMLUnavailable) {
			t.Fatalf("OpenNVML = %v, %v", n, err)
		}
		if c := len(lib.ShutdownCalls()); c != 1 {
			t.Errorf("Shutdown called %d times, want 1", c)
		}
	})
	t.Run("DeviceName", func(t *testing.T) {
		t.Parallel()
		lib, _ := newMockNVML(t, &fakeGPU{})
		if got := openMock(t, lib).DeviceName(); got != "NVIDIA Mock 80GB" {
			t.Errorf("DeviceName = %q", got)
		}
	})
	t.Run("NameUnavailable", func(t *testing.T) {
		t.Parallel()
		lib, dev := newMockNVML(t, &fakeGPU{})
		dev.GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
		if got := openMock(t, lib).DeviceName(); got != "GPU 0" {
			t.Errorf("DeviceName = %q", got)
		}
	})
}

func TestNVML_Read(t *testing.T) {
	t.Parallel()
	g := &fakeGPU{
		total: 80*1024*mib + mib/2, // rounds down
		free:  60*1024*mib + mib - 1,
		compute: []nvml.ProcessInfo{
			{Pid: 100, UsedGpuMemory: 6144 * mib},
			{Pid: 200, UsedGpuMemory: 1536*mib + 1}, // rounds up
		},
		graphics: []nvml.ProcessInfo{
			{Pid: 200, UsedGpuMemory: 1536*mib + 1}, // in both lists: counted once
			{Pid: 300, UsedGpuMemory: 300 * mib},
			{Pid: 400, UsedGpuMemory: valueNotAvailable},
		},
	}
	lib, _ := newMockNVML(t, g)
	n := openMock(t, lib)
	r, err := n.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := Reading{
		Source:  SourceNVML,
		TotalMB: 80 * 1024,
		FreeMB:  60 * 1024,
		ByPID:   map[int]int{100: 6144, 200: 1537, 300: 300, 400: 0},
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("Read =\n%+v\nwant\n%+v", r, want)
	}
	if mb, listed := r.Held(100); mb != 6144 || !listed {
		t.Errorf("Held(100) = %d, %v", mb, listed)
	}
	if mb, listed := r.Held(400); mb != 0 || !listed {
		t.Errorf("Held(400) = %d, %v: want listed with 0", mb, listed)
	}
	if mb, listed := r.Held(999); mb != 0 || listed {
		t.Errorf("Held(999) = %d, %v", mb, listed)
	}

	t.Run("GraphicsNotSupported", func(t *testing.T) {
		g.set(func(g *fakeGPU) { g.gfxRet = nvml.ERROR_NOT_SUPPORTED })
		defer g.set(func(g *fakeGPU) { g.gfxRet = nvml.SUCCESS })
		r, err := n.Read(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(r.ByPID) != 2 {
			t.Errorf("ByPID = %v, want the compute processes", r.ByPID)
		}
	})
	t.Run("DriverError", func(t *testing.T) {
		g.set(func(g *fakeGPU) { g.gfxRet = nvml.ERROR_GPU_IS_LOST })
		defer g.set(func(g *fakeGPU) { g.gfxRet = nvml.SUCCESS })
		if _, err := n.Read(t.Context()); err == nil || !strings.Contains(err.Error(), "ERROR_GPU_IS_LOST") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("ContextDone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := n.Read(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestNVML_NotOursMB(t *testing.T) {
	t.Parallel()
	// 24 GiB card: our engine (pid 100) holds 6 GiB, a desktop (pid 300)
	// 500 MiB, and the driver keeps 300 MiB that no process is charged for.
	g := &fakeGPU{
		total:    24576 * mib,
		free:     (24576 - 6144 - 500 - 300) * mib,
		compute:  []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 6144 * mib}},
		graphics: []nvml.ProcessInfo{{Pid: 300, UsedGpuMemory: 500 * mib}},
	}
	lib, _ := newMockNVML(t, g)
	r, err := openMock(t, lib).Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.NotOursMB(map[int]bool{100: true}); got != 800 {
		t.Errorf("NotOursMB(ours=100) = %d, want 800 (desktop + driver)", got)
	}
	if got := r.NotOursMB(nil); got != 6944 {
		t.Errorf("NotOursMB(none) = %d, want 6944", got)
	}
}

func TestNVML_Close(t *testing.T) {
	t.Parallel()
	g := &fakeGPU{total: mib, free: mib}
	lib, dev := newMockNVML(t, g)
	n, err := OpenNVML(lib, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if c := len(lib.ShutdownCalls()); c != 1 {
		t.Errorf("Shutdown called %d times, want 1", c)
	}
	// After Shutdown the library is unloaded: Read must not call in.
	if _, err := n.Read(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	if c := len(dev.GetMemoryInfoCalls()); c != 0 {
		t.Errorf("GetMemoryInfo called %d times after Close", c)
	}
}

func TestNVML_ConcurrentReadClose(t *testing.T) {
	t.Parallel()
	g := &fakeGPU{total: mib, free: mib}
	lib, _ := newMockNVML(t, g)
	n := openMock(t, lib)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := n.Read(t.Context()); err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() { _ = n.Close() })
	wg.Wait()
}

func TestWaitReleased(t *testing.T) {
	t.Parallel()
	const (
		total = 24576
		ours  = 6144
		pid   = 4242
	)
	// dying returns a device on which pid holds its memory until read
	// goneAt, and the driver hands the memory back at read freeAt.
	dying := func(goneAt, freeAt int) *fakeGPU {
		g := &fakeGPU{
			total:   total * mib,
			free:    (total - ours - 100) * mib,
			compute: []nvml.ProcessInfo{{Pid: pid, UsedGpuMemory: ours * mib}, {Pid: 7, UsedGpuMemory: 100 * mib}},
		}
		g.onRead = func(n int, g *fakeGPU) {
			if n == goneAt {
				g.compute = g.compute[1:]
			}
			if n == freeAt {
				g.free = (total - 100) * mib
			}
		}
		return g
	}

	t.Run("ProcessGoneAndMemoryBack", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := dying(3, 5)
			lib, _ := newMockNVML(t, g)
			n := openMock(t, lib)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := WaitReleased(ctx, n, pid, total-1000, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			// Gone at read 3, memory back at read 5: four polls.
			if g.reads != 5 || time.Since(start) != 40*time.Millisecond {
				t.Errorf("returned after %d reads, %v", g.reads, time.Since(start))
			}
		})
	})
	t.Run("MemoryBackBeforeProcessGone", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := dying(6, 2)
			lib, _ := newMockNVML(t, g)
			if err := WaitReleased(t.Context(), openMock(t, lib), pid, total-1000, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if g.reads != 6 {
				t.Errorf("returned after %d reads, want 6", g.reads)
			}
		})
	})
	t.Run("TimesOutWhileListed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := dying(-1, 2) // memory "back" but the process never leaves
			lib, _ := newMockNVML(t, g)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			err := WaitReleased(ctx, openMock(t, lib), pid, 0, 10*time.Millisecond)
			if !errors.Is(err, ErrReleaseTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want ErrReleaseTimeout and DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), "still holds 6144 MiB") {
				t.Errorf("err = %q, want the held memory named", err)
			}
			if g.reads < 100 || g.reads > 102 {
				t.Errorf("%d reads in 1s at 10ms polls", g.reads)
			}
		})
	})
	t.Run("TimesOutWithoutMemory", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := dying(1, -1) // process gone, memory never returns
			lib, _ := newMockNVML(t, g)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			err := WaitReleased(ctx, openMock(t, lib), pid, total-1000, 50*time.Millisecond)
			if !errors.Is(err, ErrReleaseTimeout) || !strings.Contains(err.Error(), "gone; free 18332 MiB, want 23576 MiB") {
				t.Fatalf("err = %v", err)
			}
		})
	})
	t.Run("ReadErrorsRetried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := dying(1, 1)
			lib, dev := newMockNVML(t, g)
			n := openMock(t, lib)
			calls := 0
			memInfo := dev.GetMemoryInfoFunc
			dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
				if calls++; calls <= 2 {
					return nvml.Memory{}, nvml.ERROR_TIMEOUT
				}
				return memInfo()
			}
			if err := WaitReleased(t.Context(), n, pid, total-1000, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if calls != 3 {
				t.Errorf("%d reads, want 3", calls)
			}
		})
	})
	t.Run("StaticReturnsAtOnce", func(t *testing.T) {
		s, _ := NewStatic(8192)
		if err := WaitReleased(t.Context(), s, pid, 1<<30, time.Hour); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenMeter_System opens the system's library: on a machine without the
// driver it must fall back to the configured total (not crash on a missing
// symbol); with one it reads the device.
func TestOpenMeter_System(t *testing.T) {
	t.Parallel()
	m, src, err := OpenMeter(4096, slogtest(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("source %s: %+v", src, r)
	if r.Source != src || r.TotalMB <= 0 {
		t.Errorf("reading %+v from source %q", r, src)
	}
}
