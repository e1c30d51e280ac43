//go:build !nonvml

package vram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is a meter that reads one device through the NVIDIA driver library.
//
// The library is loaded at run time (dlopen), so a binary built with NVML
// still starts on a machine without the driver: OpenNVML fails and the caller
// falls back to Static. Every call into the library is gated on a successful
// Init: on a machine without the driver any other call kills the process with
// a symbol-lookup error, and after Shutdown the library is unloaded again, so
// Read after Close returns ErrClosed instead of calling in.
//
// An NVML is safe for concurrent use; calls into the library are serialised.
type NVML struct {
	log   *slog.Logger
	index int
	name  string
	uuid  string

	mu     sync.Mutex // guards lib, dev and closed; held across library calls
	lib    nvml.Interface
	dev    nvml.Device
	closed bool

	// groups finds the process group of listed PIDs: /proc for the
	// system's library, nothing for a mock (its PIDs are not real).
	groups func(map[int]int) map[int]int
}

// OpenNVML initialises NVML and opens device index. lib is the library to
// use; nil means the system's libnvidia-ml (nvml.New()), tests pass go-nvml's
// mock. log may be nil.
//
// Returns an error wrapping ErrNVMLUnavailable when Init fails (no driver, no
// library, no device); nothing else is called in that case. When the device
// cannot be opened, NVML is shut down again before the error returns.
func OpenNVML(lib nvml.Interface, index int, log *slog.Logger) (*NVML, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	groups := func(map[int]int) map[int]int { return nil }
	if lib == nil {
		lib = nvml.New()
		groups = processGroups
	}
	// Init loads the library; it is the only call that is safe without it.
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: init: %s", ErrNVMLUnavailable, returnString(ret))
	}
	dev, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		err := fmt.Errorf("%w: open device %d: %s", ErrNVMLUnavailable, index, returnString(ret))
		if sret := lib.Shutdown(); sret != nvml.SUCCESS {
			err = errors.Join(err, fmt.Errorf("nvml shutdown: %s", returnString(sret)))
		}
		return nil, err
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		name = fmt.Sprintf("GPU %d", index)
	}
	uuid, ret := dev.GetUUID()
	if ret != nvml.SUCCESS {
		uuid = ""
	}
	n := &NVML{log: log, index: index, name: name, uuid: uuid, lib: lib, dev: dev, groups: groups}
	log.Info("NVML opened", "device", name, "index", index)
	return n, nil
}

// DeviceName returns the device's name as the driver reports it
// ("NVIDIA H100 80GB HBM3"), or "GPU <index>" when the driver would not say.
func (n *NVML) DeviceName() string { return n.name }

// Read returns the device's memory and what each process holds.
//
// TotalMB and FreeMB are rounded down, per-process figures up, so the ledger
// errs on the side of less room. ByPID merges compute and graphics processes
// (a process in both lists counts once, at the larger figure); a process whose
// usage the driver cannot report (containers without the host PID namespace,
// WDDM) is listed with 0.
//
// Returns ErrClosed after Close, the context's error when ctx is done, and a
// wrapped NVML error when the driver fails.
func (n *NVML) Read(ctx context.Context) (Reading, error) {
	if err := ctx.Err(); err != nil {
		return Reading{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return Reading{}, ErrClosed
	}

	mem, ret := n.dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return Reading{}, fmt.Errorf("nvml read memory of %s: %s", n.name, returnString(ret))
	}
	r := Reading{
		Source:  SourceNVML,
		TotalMB: floorMiB(mem.Total),
		FreeMB:  floorMiB(mem.Free),
		ByPID:   map[int]int{},
	}

	// Graphics processes hold memory too (a desktop on the same card). A
	// list the board does not support (NOT_SUPPORTED: graphics on some
	// data-centre boards, processes under vGPU) is left out; their memory
	// then counts as not ours, which errs on the safe side.
	lists := []struct {
		what string
		get  func() ([]nvml.ProcessInfo, nvml.Return)
	}{
		{"compute", n.dev.GetComputeRunningProcesses},
		{"graphics", n.dev.GetGraphicsRunningProcesses},
	}
	for _, l := range lists {
		procs, ret := l.get()
		switch ret {
		case nvml.SUCCESS:
			addProcesses(r.ByPID, procs)
		case nvml.ERROR_NOT_SUPPORTED:
		default:
			return Reading{}, fmt.Errorf("nvml list %s processes on %s: %s", l.what, n.name, returnString(ret))
		}
	}
	r.Group = n.groups(r.ByPID)
	return r, nil
}

// Close shuts NVML down. Later calls do nothing and return nil; Read after
// Close returns ErrClosed.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %s", returnString(ret))
	}
	return nil
}

// addProcesses adds each process's usage to byPID, keeping the larger figure
// for a PID already there.
func addProcesses(byPID map[int]int, procs []nvml.ProcessInfo) {
	for _, p := range procs {
		mb := 0
		// The driver reports NVML_VALUE_NOT_AVAILABLE (all ones) when it
		// cannot attribute memory to the process.
		if p.UsedGpuMemory != valueNotAvailable {
			mb = ceilMiB(p.UsedGpuMemory)
		}
		pid := int(p.Pid)
		if old, ok := byPID[pid]; !ok || mb > old {
			byPID[pid] = mb
		}
	}
}

// valueNotAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long.
const valueNotAvailable = ^uint64(0)

// returnString names an NVML return code. It uses go-nvml's built-in table
// rather than lib.ErrorString, which would call into the library even when it
// failed to load.
func returnString(r nvml.Return) string {
	return fmt.Sprintf("%s (%d)", r.Error(), int32(r))
}

// openDefaultNVML opens device 0 of the system's library for OpenMeter.
func openDefaultNVML(log *slog.Logger) (meterCloser, error) {
	n, err := OpenNVML(nil, 0, log)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return n, nil
}

// UUID returns the device's UUID ("" if the driver does not say).
func (n *NVML) UUID() string { return n.uuid }

// openAllNVML opens every device of the system's library.
func openAllNVML(log *slog.Logger) ([]Device, error) { return OpenAllNVML(nil, log) }

// OpenAllNVML opens every device lib lists (nil: the system's library) and
// reads each once for its size. A device that cannot be opened or read is
// left out (logged); an error only when none can be.
func OpenAllNVML(lib nvml.Interface, log *slog.Logger) ([]Device, error) {
	if lib == nil {
		lib = nvml.New()
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: init: %s", ErrNVMLUnavailable, returnString(ret))
	}
	count, ret := lib.DeviceGetCount()
	_ = lib.Shutdown() // each device below holds its own Init
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: device count: %s", ErrNVMLUnavailable, returnString(ret))
	}
	if count == 0 {
		return nil, fmt.Errorf("%w: no GPU", ErrNVMLUnavailable)
	}
	var devs []Device
	var firstErr error
	for i := range count {
		n, err := OpenNVML(lib, i, log)
		if err == nil {
			var r Reading
			if r, err = n.Read(context.Background()); err == nil {
				devs = append(devs, Device{Index: i, UUID: n.UUID(), Name: n.DeviceName(), TotalMB: r.TotalMB, Meter: n})
				continue
			}
			_ = n.Close()
		}
		// One GPU that cannot be read (fallen off the bus) must not take
		// NVML away from the others: it is left out, and a config that
		// names it gets an error naming it.
		log.Warn("GPU cannot be read; leaving it out", "index", i, "err", err)
		if firstErr == nil {
			firstErr = err
		}
	}
	if len(devs) == 0 {
		return nil, firstErr
	}
	return devs, nil
}
