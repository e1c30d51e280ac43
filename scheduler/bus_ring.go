package scheduler

// RecentEvents is how many events the bus keeps for replay (GET /events
// with Last-Event-ID or ?since=): enough for a reloaded dashboard to show
// the recent loads, evictions and failures.
const RecentEvents = 1024

// replayed reports whether events of type t are kept for replay. Token
// chunks and VRAM readings are many and only matter live (a job's text is
// served by its own stream), so they would push the rare model events out.
func replayed(t string) bool {
	return t != EvJobProgress && t != EvVRAMReading
}

// eventRing keeps the last RecentEvents replayable events. Guarded by the
// bus's mutex.
type eventRing struct {
	buf  []Event
	next int // index of the oldest event once buf is full
}

func (r *eventRing) add(e Event) {
	if !replayed(e.Type) {
		return
	}
	if len(r.buf) < RecentEvents {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
}

// after returns the kept events with Seq > since, oldest first.
func (r *eventRing) after(since uint64) []Event {
	var out []Event
	for k := range r.buf {
		e := r.buf[(r.next+k)%len(r.buf)]
		if e.Seq > since {
			out = append(out, e)
		}
	}
	return out
}

// SubscribeSince subscribes like Subscribe and returns, from the same
// instant, the kept events published after sequence number since (oldest
// first): replaying them and then reading C misses nothing and repeats
// nothing. A since above the bus's latest number (a client that saw a
// previous run of the daemon) replays everything kept.
func (b *Bus) SubscribeSince(n int, since uint64) (*Subscription, []Event) {
	c := make(chan Event, max(n, 1))
	sub := &Subscription{C: c, c: c, bus: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[sub] = struct{}{}
	if since > b.seq {
		since = 0
	}
	return sub, b.ring.after(since)
}

// Recent returns the kept events with Seq > since, oldest first.
func (b *Bus) Recent(since uint64) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ring.after(since)
}
