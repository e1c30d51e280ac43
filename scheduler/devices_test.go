package scheduler

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramcram/vramcram/vram"
)

// Several GPUs, driven through the simulation: placement, eviction that
// stays on the device that needs room, split models, a device that goes.

func runDevices(t *testing.T, devices []int, models []simModel, arrivals []simArrival, setup func(*sim)) (*sim, []Event) {
	t.Helper()
	x := newSim(simSpec{seed: 1, devices: devices, models: models, policy: PolicyBatch, maxWait: time.Second,
		maxAttempts: 3, arrivals: arrivals, limit: time.Hour})
	sub := x.s.bus.Subscribe(10000)
	defer sub.Close()
	if setup != nil {
		setup(x)
	}
	if errs := x.run(); len(errs) > 0 {
		t.Fatal(errs)
	}
	var evs []Event
	for len(sub.C) > 0 {
		evs = append(evs, <-sub.C)
	}
	return x, evs
}

// placedOn is where each model's instance is now.
func placedOn(x *sim) map[string][]int {
	out := map[string][]int{}
	for _, m := range x.s.snapshot().Models {
		for _, p := range m.Placement {
			out[m.Name] = append(out[m.Name], p.Device)
		}
	}
	return out
}

func evicted(evs []Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == EvModelEvicted {
			out = append(out, e.Model)
		}
	}
	return out
}

func job(at time.Duration, model string) simArrival {
	return simArrival{at: at, model: model, duration: 200 * time.Millisecond}
}

func TestDevices_ModelsSpreadOverTwoGPUs(t *testing.T) {
	models := []simModel{{name: "a", mb: 6000, loadTime: time.Second, slots: 1}, {name: "b", mb: 6000, loadTime: time.Second, slots: 1}}
	x, evs := runDevices(t, []int{10000, 10000}, models, []simArrival{job(0, "a"), job(100*time.Millisecond, "b")}, nil)
	if got := placedOn(x); !slices.Equal(got["a"], []int{0}) || !slices.Equal(got["b"], []int{1}) {
		t.Fatalf("placement %v, want a on GPU 0 and b on GPU 1", got)
	}
	if ev := evicted(evs); len(ev) != 0 {
		t.Fatalf("evictions %v with room on the other GPU", ev)
	}
}

func TestDevices_EvictionStaysOnTheDeviceThatNeedsRoom(t *testing.T) {
	models := []simModel{
		{name: "a", mb: 6000, loadTime: time.Second, slots: 1},
		{name: "b", mb: 5000, loadTime: time.Second, slots: 1},
		{name: "c", mb: 5000, loadTime: time.Second, slots: 1, gpus: []int{1}},
	}
	// a is the least recently used, but c needs GPU 1, where only b is.
	arr := []simArrival{job(0, "a"), job(100*time.Millisecond, "b"), job(5*time.Second, "b"), job(10*time.Second, "c")}
	x, evs := runDevices(t, []int{10000, 6000}, models, arr, nil)
	if ev := evicted(evs); !slices.Equal(ev, []string{"b"}) {
		t.Fatalf("evictions %v, want only b (GPU 1)", ev)
	}
	if got := placedOn(x); !slices.Equal(got["a"], []int{0}) || !slices.Equal(got["c"], []int{1}) {
		t.Fatalf("placement %v", got)
	}
}

func TestDevices_SplitModelTakesAShareOfEach(t *testing.T) {
	models := []simModel{{name: "big", mb: 9000, loadTime: time.Second, slots: 1, gpus: []int{0, 1}},
		{name: "small", mb: 1000, loadTime: time.Second, slots: 1}}
	x, _ := runDevices(t, []int{6000, 6000}, models, []simArrival{job(0, "big"), job(time.Second, "small")}, nil)
	snap := x.s.snapshot()
	var big ModelStatus
	for _, m := range snap.Models {
		if m.Name == "big" {
			big = m
		}
	}
	if len(big.Placement) != 2 || big.Placement[0].MB != 4500 || big.Placement[1].MB != 4500 || big.ReservedMB != 9000 {
		t.Fatalf("big placed %+v, want 4500 MiB on each GPU", big.Placement)
	}
	for _, d := range snap.Devices {
		if d.ReservedMB > d.BudgetMB {
			t.Fatalf("device %+v over budget", d)
		}
	}
}

func TestDevices_FourGPUs(t *testing.T) {
	var models []simModel
	var arr []simArrival
	for k, n := range []string{"m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"} {
		models = append(models, simModel{name: n, mb: 4000, loadTime: time.Second, slots: 1})
		arr = append(arr, job(time.Duration(k)*100*time.Millisecond, n))
	}
	x, evs := runDevices(t, []int{10000, 10000, 10000, 10000}, models, arr, nil)
	if ev := evicted(evs); len(ev) != 0 {
		t.Fatalf("evictions %v: eight 4000 MiB models fit four 10000 MiB GPUs", ev)
	}
	per := map[int]int{}
	for _, devs := range placedOn(x) {
		per[devs[0]]++
	}
	for d := range 4 {
		if per[d] != 2 {
			t.Fatalf("models per GPU %v, want 2 each", per)
		}
	}
}

func TestDevices_LostDeviceGetsNothingNew(t *testing.T) {
	models := []simModel{{name: "a", mb: 6000, loadTime: time.Second, slots: 1}, {name: "b", mb: 6000, loadTime: time.Second, slots: 1}}
	x, evs := runDevices(t, []int{10000, 10000}, models,
		[]simArrival{job(2*time.Second, "a"), job(10*time.Second, "b"), job(20*time.Second, "a")},
		func(x *sim) { x.lostDevs = map[int]bool{1: true} })
	lost := false
	for _, e := range evs {
		lost = lost || (e.Type == EvDeviceLost && e.Device == "1")
	}
	if !lost {
		t.Fatal("no device_lost event for GPU 1")
	}
	for _, e := range evs {
		if e.Type == EvModelLoading && e.Device != "0" {
			t.Fatalf("loaded %s on GPU %s, which is lost", e.Model, e.Device)
		}
	}
	if ev := evicted(evs); len(ev) == 0 {
		t.Fatal("with one GPU left, a and b must take turns")
	}
	if snap := x.s.snapshot(); snap.Devices[1].Lost == "" || snap.Devices[1].BudgetMB != 0 {
		t.Fatalf("device 1 %+v, want lost with no budget", snap.Devices[1])
	}
}

func TestModel_SpecDeviceEnv(t *testing.T) {
	if env := (Model{Name: "a", Placement: []Placement{{Device: 0, MB: 100}}}).spec().DeviceEnv(); env != nil {
		t.Fatalf("unnamed default device: %v, want nothing set", env)
	}
	sp := (Model{Name: "a", Engine: "e", Placement: []Placement{{Device: 1, ID: "GPU-b", MB: 100}, {Device: 0, ID: "GPU-a", MB: 200}}}).spec()
	if env := sp.DeviceEnv(); !slices.Equal(env, []string{"CUDA_VISIBLE_DEVICES=GPU-b,GPU-a"}) {
		t.Fatalf("env %v", env)
	}
	if sp.Model != "a" || sp.Engine != "e" || !slices.Equal(sp.SharesMB, []int{100, 200}) {
		t.Fatalf("spec %+v", sp)
	}
}

func TestDevices_ReadingChangesArePublished(t *testing.T) {
	models := []simModel{{name: "a", mb: 6000, loadTime: time.Second, slots: 1}}
	_, evs := runDevices(t, []int{10000, 8000}, models, []simArrival{job(time.Second, "a")}, nil)
	var used []int
	for _, e := range evs {
		if e.Type == EvVRAMReading && e.Device == "0" {
			used = append(used, e.VRAMMB)
		}
	}
	// The readings go from idle to a's 6000 MiB on GPU 0.
	if !slices.Contains(used, 6000) {
		t.Fatalf("vram_reading events on GPU 0 show used %v, want one with 6000", used)
	}
}

// A GPU that is lost for a while makes work wait, never fail.
func TestDevices_BrieflyLostGPUFailsNothing(t *testing.T) {
	models := []simModel{{name: "a", mb: 6000, loadTime: time.Second, slots: 1}}
	arr := []simArrival{}
	for k := range 8 {
		arr = append(arr, simArrival{at: time.Duration(k) * time.Second, model: "a", duration: 2 * time.Second})
	}
	x := newSim(simSpec{seed: 1, devices: []int{10000}, models: models, policy: PolicyBatch, maxWait: time.Second,
		maxAttempts: 3, arrivals: arr, limit: time.Hour})
	x.after(3*time.Second, func() { x.lostDevs = map[int]bool{0: true} })
	x.after(6*time.Second, func() { x.lostDevs = nil })
	if errs := x.run(); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, id := range x.st.ids {
		if j := x.st.jobs[id]; j.State != "completed" {
			t.Fatalf("job %s ended %s (%s) because the GPU was lost for 3 s", id, j.State, j.Error)
		}
	}
}

// After a victim exits, a reading taken before its exit must not make its
// memory look like another program's and evict more.
func TestDevices_StaleReadingEvictsNoMore(t *testing.T) {
	models := []simModel{
		{name: "a", mb: 6000, loadTime: 100 * time.Millisecond, slots: 1},
		{name: "c", mb: 2000, loadTime: 100 * time.Millisecond, slots: 1},
		{name: "d", mb: 1000, loadTime: 100 * time.Millisecond, slots: 1},
		{name: "x", mb: 4000, loadTime: 100 * time.Millisecond, slots: 1},
	}
	arr := []simArrival{job(0, "a"), job(time.Second, "c"), job(2*time.Second, "d"), job(10*time.Second, "x")}
	_, evs := runDevices(t, []int{10000}, models, arr, nil)
	if ev := evicted(evs); !slices.Equal(ev, []string{"a"}) {
		t.Fatalf("evictions %v, want only a (the least recently used, and enough)", ev)
	}
}

// hangingMeter is a meter whose reads block (as NVML can, in the driver)
// until release is closed.
type hangingMeter struct {
	release chan struct{}
	calls   atomic.Int32
}

func (m *hangingMeter) Read(context.Context) (vram.Reading, error) {
	m.calls.Add(1)
	<-m.release
	return vram.Reading{Source: vram.SourceNVML, TotalMB: 10000, FreeMB: 9000}, nil
}

// A meter read that hangs costs the loop MeterTimeout, not the loop: it
// counts as a failed read (three make the GPU lost), no second read piles
// up behind it, and once it returns the device reads again.
func TestDevices_HungMeterReadIsBounded(t *testing.T) {
	m := &hangingMeter{release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(m.release)
		}
	}()
	s, err := New(Config{Models: []Model{{Name: "a", VRAMMB: 1000, Slots: 1}}, MeterTimeout: 50 * time.Millisecond,
		Devices: []Device{{ID: "0", TotalMB: 10000, Meter: m}}}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dv := s.st.devs[0]
	for k := range 3 {
		returned := make(chan struct{})
		go func() {
			s.readDevice(context.Background(), 0)
			close(returned)
		}()
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
			t.Fatalf("read %d still blocked after 5 s", k+1)
		}
	}
	if dv.lost == "" || dv.failures != 3 || m.calls.Load() != 1 {
		t.Fatalf("after 3 timed-out reads: lost %q, failures %d, meter called %d times; want lost, 3, 1", dv.lost, dv.failures, m.calls.Load())
	}
	close(m.release)
	released = true
	for deadline := time.Now().Add(5 * time.Second); dv.lost != ""; {
		s.readDevice(context.Background(), 0)
		if time.Now().After(deadline) {
			t.Fatalf("device still lost after the meter came back: %q", dv.lost)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dv.reading.FreeMB != 9000 {
		t.Fatalf("reading %+v", dv.reading)
	}
}
