package scheduler

import (
	"fmt"
	"testing"
)

func TestBus_FanOutAndDrop(t *testing.T) {
	b := NewBus()
	fast, slow := b.Subscribe(10), b.Subscribe(1)
	defer fast.Close()
	for i := range 3 {
		b.Publish(Event{Type: EvJobQueued, JobID: fmt.Sprint(i)})
	}
	for i := range 3 {
		ev := <-fast.C
		if ev.JobID != fmt.Sprint(i) || ev.Seq != uint64(i+1) || ev.Time.IsZero() {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}
	if ev := <-slow.C; ev.JobID != "0" {
		t.Fatalf("slow got %+v", ev)
	}
	if d := slow.Dropped(); d != 2 {
		t.Fatalf("dropped = %d, want 2", d)
	}
	slow.Close()
	slow.Close() // idempotent
	if _, ok := <-slow.C; ok {
		t.Fatal("channel open after Close")
	}
	b.Publish(Event{Type: EvJobQueued}) // no panic on a closed subscriber
}

func BenchmarkBus_Publish(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			bus := NewBus()
			for range n {
				sub := bus.Subscribe(64)
				go func() {
					for range sub.C {
					}
				}()
				defer sub.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				bus.Publish(Event{Type: EvJobProgress, Tokens: 1})
			}
		})
	}
}
