package scheduler

import (
	"testing"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/vram"
)

// A model of unknown size (no vram_mb, no estimate) on the smaller of two
// GPUs reserves that GPU whole, not the largest one's budget, which could
// never fit (it was refused as too large).
func TestDevices_UnknownSizeFitsItsOwnGPU(t *testing.T) {
	cfg := Config{
		Devices: []Device{{ID: "0", TotalMB: 24000}, {ID: "1", TotalMB: 12000}},
		Models:  []Model{{Name: "small-gpu", Kind: engine.KindLLM, Slots: 1, GPUs: []int{1}}},
	}
	meter, _ := vram.NewStatic(24000)
	s, err := New(cfg, nil, newFakeLauncher(24000, nil), meter, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.admit("small-gpu"); err != nil {
		t.Fatalf("admit: %v", err)
	}
}
