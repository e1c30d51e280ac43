package runner

// outputFollower receives the output lines added after it was made. Its
// channel is never closed by the ring: the follower stops with stop, and
// learns that the process ended from Done.
type outputFollower struct {
	c chan string
}

// publishLocked hands line to every follower with room; a full follower
// loses it. Called by ring.add with r.mu held.
func (r *ring) publishLocked(line string) {
	for f := range r.subs {
		select {
		case f.c <- line:
		default:
		}
	}
}

// FollowOutput returns the process's recent output lines (oldest first) and,
// from the same instant, a channel of the lines that follow, buffered buf
// lines (a follower that falls behind loses lines rather than slowing the
// engine's output). Call stop when done; the channel is not closed when the
// process exits: watch Done.
func (p *Process) FollowOutput(buf int) (recent []string, lines <-chan string, stop func()) {
	r := p.ring
	f := &outputFollower{c: make(chan string, max(buf, 1))}
	r.mu.Lock()
	if r.subs == nil {
		r.subs = map[*outputFollower]struct{}{}
	}
	r.subs[f] = struct{}{}
	recent = r.linesLocked()
	r.mu.Unlock()
	stop = func() {
		r.mu.Lock()
		delete(r.subs, f)
		r.mu.Unlock()
	}
	return recent, f.c, stop
}
