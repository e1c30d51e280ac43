package vram

import (
	"context"
	"testing"
)

func TestStatic_Read(t *testing.T) {
	m, err := NewStatic(8192)
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != SourceConfig || r.TotalMB != 8192 || r.FreeMB != 8192 || r.UsedMB() != 0 {
		t.Fatalf("reading = %+v", r)
	}
	if _, err := NewStatic(0); err == nil {
		t.Fatal("NewStatic(0) succeeded")
	}
}

func TestReading_NotOursMB(t *testing.T) {
	tests := []struct {
		name string
		r    Reading
		ours map[int]bool
		want int
	}{
		{"static knows nothing", Reading{Source: SourceConfig, TotalMB: 100, FreeMB: 10}, nil, 0},
		{"all ours", Reading{Source: SourceNVML, TotalMB: 100, FreeMB: 40, ByPID: map[int]int{7: 60}}, map[int]bool{7: true}, 0},
		{"some theirs", Reading{Source: SourceNVML, TotalMB: 100, FreeMB: 40, ByPID: map[int]int{7: 50, 9: 10}}, map[int]bool{7: true}, 10},
		{"driver overhead counts", Reading{Source: SourceNVML, TotalMB: 100, FreeMB: 90}, nil, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.NotOursMB(tt.ours); got != tt.want {
				t.Fatalf("NotOursMB = %d, want %d", got, tt.want)
			}
		})
	}
}
