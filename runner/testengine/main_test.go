package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	o, err := parseArgs(strings.Fields(
		"-m /m/a.gguf --host 0.0.0.0 --port 9000 -c 4096 -ngl 99 -np 3 --embeddings --metrics " +
			"--flash-attn on --no-mmap --cache-type-k=q8_0 --foo -1 " +
			"--test-load-delay 150ms --test-fail-load --test-token-delay 5ms --test-crash-after 2 " +
			"--test-hang-after 3 --test-ignore-sigterm --test-fork-grandchild --test-exit-after 1s"))
	if err != nil {
		t.Fatal(err)
	}
	want := options{
		model: "/m/a.gguf", host: "0.0.0.0", port: 9000, ctxSize: 4096, gpuLayers: "99", parallel: 3,
		parallelSet: true, ubatch: 512, embeddings: true, metrics: true,
		loadDelay: 150 * time.Millisecond, failLoad: true, tokenDelay: 5 * time.Millisecond,
		crashAfter: 2, hangAfter: 3, ignoreSigterm: true, forkGrandchild: true, exitAfter: time.Second,
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got  %+v\nwant %+v", o, want)
	}

	for _, args := range []string{"--model=x --n-gpu-layers all --parallel -1", "--model x --gpu-layers=auto"} {
		o, err := parseArgs(strings.Fields(args))
		if err != nil || o.model != "x" || o.parallel != 4 {
			t.Fatalf("%s: %+v %v", args, o, err)
		}
	}
	for _, bad := range []string{"--port", "--port x", "-ngl many", "-np 0", "--test-load-delay soon"} {
		if _, err := parseArgs(strings.Fields(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPieces(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prompt   string
		n        int
		want     []string
		stopType string
	}{
		{"hello world", -1, []string{"echo:", " hello", " world"}, "eos"},
		{"hello world", 0, []string{"echo:", " hello", " world"}, "eos"},
		{"hello world", 3, []string{"echo:", " hello", " world"}, "eos"},
		{"hello world", 2, []string{"echo:", " hello"}, "limit"},
		{"  spaced\n\tout  ", -1, []string{"echo:", " spaced", " out"}, "eos"},
		{"", -1, []string{"echo:"}, "eos"},
	}
	for _, tt := range tests {
		got, st := pieces(tt.prompt, tt.n)
		if !reflect.DeepEqual(got, tt.want) || st != tt.stopType {
			t.Errorf("pieces(%q, %d) = %q %s, want %q %s", tt.prompt, tt.n, got, st, tt.want, tt.stopType)
		}
	}
}

func TestTextStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prompt string
		stops  []string
		want   string // final content
		word   string
	}{
		{"NoStops", "a b c", nil, "echo: a b c", ""},
		{"WholeToken", "a b c", []string{"b"}, "echo: a ", "b"},
		{"AcrossTokens", "hello world x", []string{"lo wo"}, "echo: hel", "lo wo"},
		{"Earliest", "a b c", []string{"b", "a"}, "echo: ", "a"},
		{"PartialNeverCompletes", "hello there", []string{"hello world"}, "echo: hello there", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, _ := pieces(tt.prompt, -1)
			ts := textStream{stops: tt.stops}
			var out strings.Builder
			stopped := false
			for _, p := range ps {
				s, done := ts.add(p)
				out.WriteString(s)
				if done {
					stopped = true
					break
				}
			}
			out.WriteString(ts.flush())
			if out.String() != tt.want || ts.text != tt.want || ts.word != tt.word || stopped != (tt.word != "") {
				t.Fatalf("released %q, text %q, word %q; want %q %q", out.String(), ts.text, ts.word, tt.want, tt.word)
			}
		})
	}
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	a, b, c := embed("x"), embed("x"), embed("y")
	if !reflect.DeepEqual(a, b) || reflect.DeepEqual(a, c) || len(a) != embedDims {
		t.Fatalf("embed not deterministic or not input-dependent")
	}
	var norm float64
	for _, v := range a {
		norm += v * v
	}
	if norm < 0.999 || norm > 1.001 {
		t.Fatalf("norm² %f", norm)
	}
}
