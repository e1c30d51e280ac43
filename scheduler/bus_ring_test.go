package scheduler

import (
	"fmt"
	"testing"
)

func TestBus_SubscribeSinceReplaysKeptEvents(t *testing.T) {
	b := NewBus()
	b.Publish(Event{Type: EvModelLoading, Model: "a"})
	b.Publish(Event{Type: EvJobProgress, JobID: "j", Chunk: "x"}) // not kept
	b.Publish(Event{Type: EvModelEvicted, Model: "a"})
	b.Publish(Event{Type: EvVRAMReading, TotalMB: 1}) // not kept

	sub, replay := b.SubscribeSince(8, 0)
	defer sub.Close()
	if len(replay) != 2 || replay[0].Type != EvModelLoading || replay[1].Type != EvModelEvicted || replay[1].Seq != 3 {
		t.Fatalf("replay since 0 = %+v", replay)
	}
	b.Publish(Event{Type: EvModelReady, Model: "b"})
	if ev := <-sub.C; ev.Type != EvModelReady || ev.Seq != 5 {
		t.Fatalf("live event after replay = %+v", ev)
	}
	if got := b.Recent(1); len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 5 {
		t.Fatalf("Recent(1) = %+v", got)
	}
	// An id from a previous run of the daemon (above the latest): all.
	sub2, replay := b.SubscribeSince(1, 1000)
	sub2.Close()
	if len(replay) != 3 {
		t.Fatalf("replay since a future id = %d events, want 3", len(replay))
	}
}

func TestBus_RingIsBounded(t *testing.T) {
	b := NewBus()
	for i := range RecentEvents + 10 {
		b.Publish(Event{Type: EvJobQueued, JobID: fmt.Sprint(i)})
	}
	got := b.Recent(0)
	if len(got) != RecentEvents {
		t.Fatalf("kept %d events, want %d", len(got), RecentEvents)
	}
	if got[0].JobID != "10" || got[len(got)-1].JobID != fmt.Sprint(RecentEvents+9) {
		t.Fatalf("kept %s … %s, want the newest, oldest first", got[0].JobID, got[len(got)-1].JobID)
	}
}
