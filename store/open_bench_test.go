package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkOpen measures Open of a store holding n jobs (300-byte prompts),
// the whole-file check included.
func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "vramcram.db")
			s, err := Open(path, Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			prompt := strings.Repeat("x", 300)
			var wg = make(chan error, 64)
			for i := range n {
				go func() {
					j := Job{ID: fmt.Sprintf("job-%07d", i), Model: "m", Type: "llm", Prompt: prompt}
					wg <- s.Enqueue(context.Background(), &j)
				}()
				if i >= 63 {
					if err := <-wg; err != nil {
						b.Fatal(err)
					}
				}
			}
			for range min(n, 63) {
				if err := <-wg; err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				s, err := Open(path, Options{NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
