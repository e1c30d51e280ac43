package main

import (
	"bytes"
	"errors"
	"image/png"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSDRole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"/x/testengine", "-m", "a"}, ""},
		{[]string{"/x/sd-cli", "-m", "a"}, roleSDCLI},
		{[]string{"/x/sd", "-m", "a"}, roleSDCLI},
		{[]string{"/x/sd-server"}, roleSDServer},
		{[]string{"/x/testengine", "-m", "a", "--test-role", "sd-server"}, roleSDServer},
		{[]string{"/x/testengine", "--test-role=sd-cli"}, roleSDCLI},
	}
	for _, tt := range tests {
		if got := sdRole(tt.args); got != tt.want {
			t.Errorf("sdRole(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestParseSDArgs(t *testing.T) {
	t.Parallel()
	o, err := parseSDArgs(strings.Fields("--diffusion-model d --vae v -p cat -n dog -o out.png -W 64 -H 128 --steps 4 " +
		"--cfg-scale 1.5 -s -1 -b 3 --sampling-method euler_a --scheduler karras --listen-port 9 --diffusion-fa -t 4 " +
		"--test-step-delay 5ms --test-crash-at-step 7 --test-exit-after 2s --test-role sd-cli"))
	if err != nil {
		t.Fatal(err)
	}
	if o.prompt != "cat" || o.negative != "dog" || o.width != 64 || o.height != 128 || o.steps != 4 || o.cfg != 1.5 ||
		o.seed != -1 || o.batch != 3 || o.samplingMethod != "euler_a" || o.scheduler != "karras" || o.listenPort != 9 ||
		o.crashAtStep != 7 || o.exitAfter != 2*time.Second || len(o.files) != 2 || o.files[0] != [2]string{"--diffusion-model", "d"} {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range []string{"--bogus", "-W", "--sampling-method bogus", "--scheduler bad/name"} {
		if _, err := parseSDArgs(strings.Fields(bad)); err == nil || !strings.HasPrefix(err.Error(), "error: ") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

// Numbers are read as std::stoi/stof/stoll read them: a prefix counts, no
// number or one out of range is an exception (the process aborts).
func TestParseSDArgs_Numbers(t *testing.T) {
	t.Parallel()
	o, err := parseSDArgs(strings.Fields("-W 64px -H +32 --cfg-scale 2.5x -s -7 -t 3"))
	if err != nil || o.width != 64 || o.height != 32 || o.cfg != 2.5 || o.seed != -7 {
		t.Fatalf("parsed %+v, err %v", o, err)
	}
	for args, want := range map[string]string{
		"-W x": "std::invalid_argument: stoi", "-H 99999999999": "std::out_of_range: stoi",
		"--cfg-scale abc": "std::invalid_argument: stof", "--guidance 1e99": "std::out_of_range: stof",
		"-s zz": "std::invalid_argument: stoll", "--clip-skip -": "std::invalid_argument: stoi",
	} {
		var exc *cppException
		if _, err := parseSDArgs(strings.Fields(args)); !errors.As(err, &exc) || err.Error() != want {
			t.Errorf("%q: err %v, want %s", args, err, want)
		}
	}
}

func TestOutputPaths(t *testing.T) {
	t.Parallel()
	if got := outputPaths("/d/out.png", 1); !slices.Equal(got, []string{"/d/out.png"}) {
		t.Fatal(got)
	}
	if got := outputPaths("/d/out.png", 3); !slices.Equal(got, []string{"/d/out_0.png", "/d/out_1.png", "/d/out_2.png"}) {
		t.Fatal(got)
	}
	if got := outputPaths("/d/out", 2); !slices.Equal(got, []string{"/d/out_0.png", "/d/out_1.png"}) {
		t.Fatal(got)
	}
}

func TestRenderPNG(t *testing.T) {
	t.Parallel()
	var a, b, c bytes.Buffer
	for _, x := range []struct {
		buf    *bytes.Buffer
		prompt string
	}{{&a, "cat"}, {&b, "cat"}, {&c, "dog"}} {
		if err := renderPNG(x.buf, x.prompt, "", 1, 0, 40, 24); err != nil {
			t.Fatal(err)
		}
	}
	img, err := png.Decode(bytes.NewReader(a.Bytes()))
	if err != nil || img.Bounds().Dx() != 40 || img.Bounds().Dy() != 24 {
		t.Fatalf("decode: %v %v", err, img)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("same prompt must give the same image, another prompt another")
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	got := progressLine(3, 20, 0.5)
	want := "\r  |=======>                                          | 3/20 - 2.00it/s\x1b[K"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got := progressLine(20, 20, 2); !strings.HasSuffix(got, "| 20/20 - 2.00s/it\x1b[K\n") || strings.Contains(got, ">") {
		t.Fatalf("last step %q", got)
	}
}
