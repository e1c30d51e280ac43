package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/vramcram/vramcram/vram"
)

// Device is one GPU the scheduler places engines on. Each has its own
// ledger: budget (total − safety margin), reservations of the instances
// placed on it, and memory held by processes that are not ours.
type Device struct {
	// ID is what CUDA_VISIBLE_DEVICES names for an engine on this device:
	// its index ("0", "1") or UUID.
	ID   string
	Name string
	// TotalMB sizes the device when its meter cannot tell.
	TotalMB int
	// Meter reads this device; nil uses the meter given to New (one device)
	// or the static size.
	Meter Meter
}

// Placement is one device's share of an instance's reservation.
type Placement struct {
	Device int    `json:"device"` // position in Config.Devices
	ID     string `json:"id"`     // Device.ID, for CUDA_VISIBLE_DEVICES
	MB     int    `json:"vram_mb"`
}

// devState is the loop's record of one device.
type devState struct {
	Device
	reading  vram.Reading
	failures int    // consecutive failed reads
	lost     string // why the device cannot be used (its meter fails), or ""
	// hung is the answer channel of a read that passed MeterTimeout and
	// has not returned yet; no new read starts on the device until it has.
	hung chan meterAnswer
}

// meterAnswer is what one meter read returned.
type meterAnswer struct {
	r   vram.Reading
	err error
}

// boundedRead reads dv's meter in a goroutine of its own and waits for it
// up to timeout. A read that is still running then (NVML can block in the
// driver) is left to finish on its own and reported as an error; until it
// has finished, later reads report the same without starting another.
func (dv *devState) boundedRead(ctx context.Context, timeout time.Duration) (vram.Reading, error) {
	if dv.hung != nil {
		select {
		case <-dv.hung:
			dv.hung = nil
		default:
			return vram.Reading{}, fmt.Errorf("an earlier read has not returned after %s", timeout)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	answer := make(chan meterAnswer, 1) // the reader never blocks on it
	m := dv.Meter
	go func() {
		defer cancel()
		r, err := m.Read(ctx)
		answer <- meterAnswer{r, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case a := <-answer:
		return a.r, a.err
	case <-timer.C:
		dv.hung = answer
		return vram.Reading{}, fmt.Errorf("read did not return within %s", timeout)
	}
}

// budgetOn is what may be reserved on device d now: its capacity, or 0
// while the device is lost.
func (s *Scheduler) budgetOn(d int) int {
	if s.st.devs[d].lost != "" {
		return 0
	}
	return s.capacityOn(d)
}

// capacityOn is device d's total − safety margin from its last reading,
// lost or not: what decides whether a model can ever fit there.
func (s *Scheduler) capacityOn(d int) int {
	dv := s.st.devs[d]
	total := dv.reading.TotalMB
	if total <= 0 {
		total = dv.TotalMB
	}
	return total - s.cfg.SafetyMarginMB
}

// ledgerOn returns, for device d, MiB reserved by our instances, MiB of
// those being released (draining or stopping) and MiB held by processes
// that are not ours.
func (s *Scheduler) ledgerOn(d int) (reserved, releasing, notOurs int) {
	for _, i := range s.st.instances() {
		mb := i.shareOn(d)
		reserved += mb
		if i.state == InstDraining || i.state == InstStopping {
			releasing += mb
		}
	}
	return reserved, releasing, s.st.devs[d].reading.NotOursMB(s.st.ours())
}

// freeOn is what device d can take now.
func (s *Scheduler) freeOn(d int) int {
	reserved, _, notOurs := s.ledgerOn(d)
	return s.budgetOn(d) - reserved - notOurs
}

// shareOn is i's reservation on device d.
func (i *instance) shareOn(d int) int {
	for _, p := range i.place {
		if p.Device == d {
			return p.MB
		}
	}
	return 0
}

// setShares replaces i's placement and keeps reservedMB, its sum, in step.
func (i *instance) setShares(place []Placement) {
	i.place = place
	i.reservedMB = 0
	for _, p := range place {
		i.reservedMB += p.MB
	}
}

// split divides need over devices, the remainder on the first.
func (s *Scheduler) split(devs []int, need int) []Placement {
	out := make([]Placement, len(devs))
	for k, d := range devs {
		out[k] = Placement{Device: d, ID: s.st.devs[d].ID, MB: need / len(devs)}
	}
	out[0].MB += need % len(devs)
	return out
}

// options lists where m could run with need MiB now: its configured
// devices (several for a split) unless one is lost, else each usable device
// alone. A model of unknown size takes each of its devices whole.
func (s *Scheduler) options(m *modelState, need int) [][]Placement {
	if len(m.GPUs) > 0 {
		for _, d := range m.GPUs {
			if s.st.devs[d].lost != "" {
				return nil // wait for the device to come back
			}
		}
		return [][]Placement{s.placeOn(m, m.GPUs, need)}
	}
	var out [][]Placement
	for d, dv := range s.st.devs {
		if dv.lost == "" {
			out = append(out, s.placeOn(m, []int{d}, need))
		}
	}
	return out
}

// placeOn is m's placement on devs: need split evenly, or for a model of
// unknown size each device whole (its own capacity, which on a smaller
// GPU is less than need, the largest one's).
func (s *Scheduler) placeOn(m *modelState, devs []int, need int) []Placement {
	place := s.split(devs, need)
	if s.unknownSize(m) {
		for k := range place {
			place[k].MB = s.capacityOn(place[k].Device)
		}
	}
	return place
}

// fitsAlone reports whether some placement of m fits its devices' capacity
// with nothing else on them but pinned instances, which are never evicted.
// A lost device counts with its last capacity: its models wait, they are
// not refused.
func (s *Scheduler) fitsAlone(m *modelState, need int) bool {
	var opts [][]Placement
	if len(m.GPUs) > 0 {
		opts = [][]Placement{s.placeOn(m, m.GPUs, need)}
	} else {
		for d := range s.st.devs {
			opts = append(opts, s.placeOn(m, []int{d}, need))
		}
	}
	for _, opt := range opts {
		ok := true
		for _, p := range opt {
			ok = ok && p.MB <= s.capacityOn(p.Device)-s.pinnedOn(p.Device, m)
		}
		if ok {
			return true
		}
	}
	return false
}

// pinnedOn is what pinned instances of models other than m hold on d.
func (s *Scheduler) pinnedOn(d int, m *modelState) int {
	n := 0
	for _, i := range s.st.instances() {
		if i.model != m && i.model.Pinned {
			n += i.shareOn(d)
		}
	}
	return n
}

// fitNow returns the option that fits beside what runs now, keeping the
// most memory free on its tightest device.
func (s *Scheduler) fitNow(opts [][]Placement) ([]Placement, bool) {
	var best []Placement
	bestLeft := -1
	for _, opt := range opts {
		left := -1
		for _, p := range opt {
			l := s.freeOn(p.Device) - p.MB
			if left == -1 || l < left {
				left = l
			}
		}
		if left >= 0 && left > bestLeft {
			best, bestLeft = opt, left
		}
	}
	return best, best != nil
}

// room is how a load can get its memory on one option.
type room struct {
	place   []Placement
	victims []victim
	wait    bool // the memory is already on its way back
}

// makeRoom plans, per option, the victims that free what each device
// lacks beyond memory already being released; it prefers an option that
// only has to wait, then the fewest victims, then the least memory
// evicted. ok is false when no option can be made to fit in scope.
func (s *Scheduler) makeRoom(m *modelState, opts [][]Placement, rule evictRule) (room, bool) {
	var best room
	bestCost := [2]int{-1, -1}
	for _, opt := range opts {
		r, ok := s.roomOn(m, opt, rule)
		if !ok {
			continue
		}
		if r.wait {
			return r, true
		}
		mb := 0
		for _, v := range r.victims {
			mb += v.ReservedMB
		}
		cost := [2]int{len(r.victims), mb}
		if bestCost[0] < 0 || cost[0] < bestCost[0] || (cost[0] == bestCost[0] && cost[1] < bestCost[1]) {
			best, bestCost = r, cost
		}
	}
	return best, bestCost[0] >= 0
}

// roomOn plans victims for one option. A victim chosen for one device frees
// its share on the option's other devices too.
func (s *Scheduler) roomOn(m *modelState, opt []Placement, rule evictRule) (room, bool) {
	r := room{place: opt, wait: true}
	chosen := map[int]bool{}
	for _, p := range opt {
		reserved, releasing, notOurs := s.ledgerOn(p.Device)
		lack := p.MB - (s.budgetOn(p.Device) - reserved - notOurs) - releasing
		for _, v := range r.victims {
			lack -= s.instanceByID(v.ID).shareOn(p.Device)
		}
		if lack <= 0 {
			continue
		}
		r.wait = false
		var cands []victim
		for _, v := range s.victimsOn(m, p.Device) {
			if !chosen[v.ID] {
				cands = append(cands, v)
			}
		}
		vs, ok := chooseVictims(cands, lack, rule)
		if !ok {
			return room{}, false
		}
		for _, v := range vs {
			chosen[v.ID] = true
			r.victims = append(r.victims, v)
		}
	}
	return r, true
}

// instanceByID finds a live instance.
func (s *Scheduler) instanceByID(id int) *instance {
	for _, i := range s.st.instances() {
		if i.id == id {
			return i
		}
	}
	return &instance{}
}

// readDevice reads device d's meter. A meter that fails three times in a row
// marks the device lost (nothing is placed on it) until it reads again;
// until then the last reading stands.
func (s *Scheduler) readDevice(ctx context.Context, d int) {
	dv := s.st.devs[d]
	m := dv.Meter
	if m == nil {
		return
	}
	r, err := dv.boundedRead(ctx, s.cfg.MeterTimeout)
	if err != nil {
		dv.failures++
		s.log.Warn("read VRAM", "device", dv.ID, "err", err)
		if dv.lost == "" && dv.failures >= 3 {
			dv.lost = fmt.Sprintf("reading GPU %s failed: %v", dv.ID, err)
			s.log.Error("GPU lost: nothing is placed on it until it reads again", "device", dv.ID, "err", err)
			s.bus.Publish(Event{Type: EvDeviceLost, Device: dv.ID, Error: err.Error()})
		}
		return
	}
	dv.failures = 0
	if r.TotalMB != dv.reading.TotalMB || r.FreeMB != dv.reading.FreeMB || r.Source != dv.reading.Source {
		s.bus.Publish(Event{Type: EvVRAMReading, Device: dv.ID, TotalMB: r.TotalMB, FreeMB: r.FreeMB,
			NotOursMB: r.NotOursMB(s.st.ours()), VRAMMB: r.UsedMB()})
	}
	if dv.lost != "" {
		s.log.Info("GPU reads again", "device", dv.ID)
		s.bus.Publish(Event{Type: EvDeviceBack, Device: dv.ID})
		dv.lost = ""
	}
	dv.reading = r
}
