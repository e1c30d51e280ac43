package sdcpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/enginetest"
	"github.com/vramcram/vramcram/runner"
	"github.com/vramcram/vramcram/store"
)

// standIn is the directory of the stand-in engine, named sd-cli and
// sd-server (the role follows the program name).
func standIn(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the stand-in engine; skipped with -short")
	}
	return enginetest.StandIn(t)
}

// sdLauncher returns a launcher for one model "sd" with the stand-in.
func sdLauncher(t *testing.T, engine string, extra ...string) *Launcher {
	t.Helper()
	dir := standIn(t)
	model := filepath.Join(t.TempDir(), "sd.safetensors")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Launcher{
		CLIBinary:    filepath.Join(dir, "sd-cli"),
		ServerBinary: filepath.Join(dir, "sd-server"),
		Options: map[string]Options{"sd": {
			Engine: engine, Files: Files{Model: model}, Extra: extra,
			Defaults: Defaults{Width: 64, Height: 64, Steps: 3, CFGScale: 7},
		}},
		ImageDir: t.TempDir(),
		Runner: runner.Config{
			ReadyTimeout: 20 * time.Second, HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 5 * time.Second,
			StopGrace: 5 * time.Second,
		},
		SeedFunc: func() int64 { return 77 },
	}
}

func launch(t *testing.T, l *Launcher) engine.Engine {
	t.Helper()
	eng, err := l.Launch(context.Background(), engine.Spec{Model: "sd", Engine: EngineSDCLI, Kind: engine.KindDiffusion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		<-eng.Done()
	})
	if err := eng.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return eng
}

func diffusionJob(prompt, params string) engine.Job {
	return engine.Job{ID: store.NewID(), Model: "sd", Prompt: prompt, Params: json.RawMessage(params)}
}

// checkResult decodes a result document and its image files.
func checkResult(t *testing.T, l *Launcher, id string, doc []byte, n, w, h int) Result {
	t.Helper()
	var res Result
	if err := json.Unmarshal(doc, &res); err != nil {
		t.Fatal(err)
	}
	if res.Type != "diffusion" || len(res.Images) != n || res.Width != w || res.Height != h {
		t.Fatalf("result %s", doc)
	}
	for i, im := range res.Images {
		if im.Format != "png" || im.File != fmt.Sprintf("%d.png", i) || im.B64 != "" {
			t.Fatalf("image %d: %+v", i, im)
		}
		path, err := ImagePath(l.ImageDir, id, im.File)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil || img.Bounds().Dx() != w || img.Bounds().Dy() != h {
			t.Fatalf("image %d: %v %v", i, err, img.Bounds())
		}
	}
	return res
}

func TestSDCLIEngine_Run(t *testing.T) {
	t.Parallel()
	l := sdLauncher(t, EngineSDCLI)
	eng := launch(t, l)
	if eng.PID() != 0 {
		t.Fatalf("PID %d before any job", eng.PID())
	}
	job := diffusionJob("a red fox", `{"width":96,"count":2,"negative_prompt":"blur"}`)
	var mu sync.Mutex
	var seen []string
	pids := map[int]bool{}
	res, err := eng.Run(context.Background(), job, func(p engine.Progress) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%d/%d", p.Step, p.Steps))
		pids[eng.PID()] = true
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1/6", "2/6", "3/6", "4/6", "5/6", "6/6"}; !slices.Equal(seen, want) {
		t.Fatalf("progress %v, want %v", seen, want)
	}
	if len(pids) != 1 || pids[0] {
		t.Fatalf("PID during the run: %v", pids)
	}
	if eng.PID() != 0 {
		t.Fatalf("PID %d after the job", eng.PID())
	}
	r := checkResult(t, l, job.ID, res, 2, 96, 64)
	if r.Seed != 77 || r.Steps != 3 || r.CFGScale != 7 {
		t.Fatalf("result %+v", r)
	}
	entries, _ := os.ReadDir(filepath.Join(l.ImageDir, job.ID))
	if len(entries) != 2 {
		t.Fatalf("job dir holds %d files, want only 0.png and 1.png", len(entries))
	}
}

func TestSDCLIEngine_Failures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		extra    []string
		params   string
		timeout  time.Duration
		rejected bool
		msg      string
	}{
		{"BadParams", nil, `{"width":7}`, 0, true, "params.width"},
		{"BadModel", []string{"--test-fail-load"}, `{}`, 0, true, "unknown format"},
		{"Crash", []string{"--test-crash-at-step", "2"}, `{}`, 0, false, "exited with code 2"},
		{"Timeout", []string{"--test-hang-at-step", "1", "--test-ignore-sigterm"}, `{}`, 200 * time.Millisecond, false, "timed out after 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := sdLauncher(t, EngineSDCLI, tt.extra...)
			o := l.Options["sd"]
			o.Timeout = tt.timeout
			l.Options["sd"] = o
			eng := launch(t, l)
			job := diffusionJob("x", tt.params)
			_, err := eng.Run(context.Background(), job, func(engine.Progress) {})
			if err == nil || errors.Is(err, engine.ErrRejected) != tt.rejected || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err %v; want rejected=%v containing %q", err, tt.rejected, tt.msg)
			}
			if _, err := os.Stat(filepath.Join(l.ImageDir, job.ID)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("image dir of a failed job: %v", err)
			}
		})
	}
}

func TestSDCLIEngine_StopKillsRun(t *testing.T) {
	t.Parallel()
	l := sdLauncher(t, EngineSDCLI, "--test-hang-at-step", "2", "--test-ignore-sigterm")
	eng, err := l.Launch(context.Background(), engine.Spec{Model: "sd"})
	if err != nil {
		t.Fatal(err)
	}
	stepped := make(chan int, 8)
	errCh := make(chan error, 1)
	go func() {
		_, err := eng.Run(context.Background(), diffusionJob("x", ""), func(engine.Progress) { stepped <- eng.PID() })
		errCh <- err
	}()
	pid := <-stepped
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-eng.Done():
	default:
		t.Fatal("Done not closed after Stop returned")
	}
	if err := <-errCh; !errors.Is(err, runner.ErrStopped) {
		t.Fatalf("run err %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("sd-cli %d still exists: %v", pid, err)
	}
	if _, err := eng.Run(context.Background(), diffusionJob("x", ""), func(engine.Progress) {}); !errors.Is(err, runner.ErrStopped) {
		t.Fatalf("run after Stop: %v", err)
	}
	if !errors.Is(eng.Err(), runner.ErrStopped) {
		t.Fatalf("Err %v", eng.Err())
	}
}

func TestSDServerEngine_Run(t *testing.T) {
	t.Parallel()
	l := sdLauncher(t, EngineSDServer, "--test-load-delay", "20ms")
	eng := launch(t, l)
	if eng.PID() <= 0 {
		t.Fatal("no PID")
	}
	job := diffusionJob("a lighthouse", `{"height":128,"count":3,"seed":5,"steps":2,"cfg_scale":3.5}`)
	res, err := eng.Run(context.Background(), job, func(engine.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	r := checkResult(t, l, job.ID, res, 3, 64, 128)
	if r.Seed != 5 || r.Steps != 2 || r.CFGScale != 3.5 {
		t.Fatalf("result %+v", r)
	}
	// The same request gives the same pixels: the parameters reached it.
	again := diffusionJob("a lighthouse", `{"height":128,"count":3,"seed":5,"steps":2,"cfg_scale":3.5}`)
	if _, err := eng.Run(context.Background(), again, func(engine.Progress) {}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(l.ImageDir, job.ID, "1.png"))
	b, _ := os.ReadFile(filepath.Join(l.ImageDir, again.ID, "1.png"))
	if !bytes.Equal(a, b) {
		t.Fatal("same request, different image")
	}
	if _, err := eng.Run(context.Background(), diffusionJob("x", `{"steps":0}`), func(engine.Progress) {}); !errors.Is(err, engine.ErrRejected) {
		t.Fatalf("bad params: %v", err)
	}
	// sd-server clamps the step count to 100 without a word: more is
	// refused rather than run with fewer steps than the result would say.
	_, err = eng.Run(context.Background(), diffusionJob("x", `{"steps":101}`), func(engine.Progress) {})
	var fe *engine.FieldError
	if !errors.Is(err, engine.ErrRejected) || !errors.As(err, &fe) || fe.Field != "params.steps" {
		t.Fatalf("101 steps on sd-server: %v; want rejected naming params.steps", err)
	}
}

func TestLauncher_Check(t *testing.T) {
	t.Parallel()
	l := sdLauncher(t, EngineSDCLI)
	m := engine.Spec{Model: "sd"}
	if err := l.Check(m); err != nil {
		t.Fatal(err)
	}
	l.CLIBinary = "/nonexistent/sd-cli"
	if err := l.Check(m); err == nil || !strings.Contains(err.Error(), "inference.sd_path") {
		t.Fatalf("missing binary: %v", err)
	}
	l = sdLauncher(t, EngineSDServer)
	o := l.Options["sd"]
	o.Files.VAE = "/nonexistent/vae.safetensors"
	l.Options["sd"] = o
	if err := l.Check(m); err == nil || !strings.Contains(err.Error(), `"/nonexistent/vae.safetensors" not found`) {
		t.Fatalf("missing vae: %v", err)
	}
	if err := l.Check(engine.Spec{Model: "other"}); err == nil {
		t.Fatal("unknown model passed")
	}
}

func TestStepCounter(t *testing.T) {
	t.Parallel()
	c := newStepCounter(2, 3)
	var got []string
	for _, s := range [][2]int{{1, 2}, {2, 2}, {5, 9}, {1, 2}, {2, 2}, {1, 2}, {2, 2}, {1, 2}} {
		if p, ok := c.add(s[0], s[1]); ok {
			got = append(got, fmt.Sprintf("%d/%d", p.Step, p.Steps))
		}
	}
	if want := []string{"1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "6/6"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCollectCLIOutput(t *testing.T) {
	t.Parallel()
	for _, names := range [][]string{
		{"out.png"},
		{"out_0.png", "out_1.png", "out_2.png"}, // current releases
		{"out.png", "out_2.png", "out_3.png"},   // older ones
		{"out_1.png", "out_10.png", "out_2.png"},
	} {
		dir := t.TempDir()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := collectCLIOutput(dir, len(names)); err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := range names {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.png", i)))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(b))
		}
		want := slices.Clone(names)
		if names[0] == "out_1.png" {
			want = []string{"out_1.png", "out_2.png", "out_10.png"}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	if err := collectCLIOutput(t.TempDir(), 1); err == nil {
		t.Fatal("no images: no error")
	}
}

func TestImagePath(t *testing.T) {
	t.Parallel()
	id := store.NewID()
	if p, err := ImagePath("/data/images", id, "3.png"); err != nil || p != "/data/images/"+id+"/3.png" {
		t.Fatalf("%s %v", p, err)
	}
	for _, bad := range [][2]string{{"../x", "0.png"}, {id, "../0.png"}, {id, "x.png"}, {"", "0.png"}, {id, "0.png/.."}} {
		if _, err := ImagePath("/data/images", bad[0], bad[1]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := RemoveJobImages("/data/images", "../../etc"); err == nil {
		t.Fatal("bad id accepted")
	}
}

// BenchmarkSDCLIEngine_Run measures one sd-cli job end to end with the
// stand-in (1 step, 64×64): spawn, progress parsing, collecting and checking
// the PNG, the result document. The real engine's load and sampling come on
// top.
func BenchmarkSDCLIEngine_Run(b *testing.B) {
	dir := standIn(b)
	model := filepath.Join(b.TempDir(), "sd.safetensors")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		b.Fatal(err)
	}
	l := &Launcher{
		CLIBinary: filepath.Join(dir, "sd-cli"),
		Options: map[string]Options{"sd": {Files: Files{Model: model},
			Defaults: Defaults{Width: 64, Height: 64, Steps: 1, CFGScale: 7}}},
		ImageDir: b.TempDir(),
	}
	eng, err := l.Launch(context.Background(), engine.Spec{Model: "sd"})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Stop(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eng.Run(context.Background(), diffusionJob("a cat", ""), func(engine.Progress) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// A prompt longer than one argv word may be (128 KiB on Linux; 100,000
// non-ASCII characters are 200 KB) reaches sd-cli through --prompt-file,
// and the job's directory keeps only its images.
func TestSDCLIEngine_LongPrompt(t *testing.T) {
	t.Parallel()
	l := sdLauncher(t, EngineSDCLI)
	eng := launch(t, l)
	run := func(prompt, id string) []byte {
		job := diffusionJob(prompt, `{"negative_prompt":"`+strings.Repeat("ü", MaxNegativePrompt)+`"}`)
		job.ID = id
		res, err := eng.Run(context.Background(), job, func(engine.Progress) {})
		if err != nil {
			t.Fatalf("run with a %d-byte prompt: %v", len(prompt), err)
		}
		checkResult(t, l, job.ID, res, 1, 64, 64)
		entries, _ := os.ReadDir(filepath.Join(l.ImageDir, job.ID))
		if len(entries) != 1 {
			t.Fatalf("job dir holds %d files, want only 0.png", len(entries))
		}
		b, err := os.ReadFile(filepath.Join(l.ImageDir, job.ID, "0.png"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := run(strings.Repeat("é", 100_000), "longprompta")
	b := run(strings.Repeat("é", 99_999)+"e", "longpromptb")
	if bytes.Equal(a, b) {
		t.Fatal("different long prompts gave the same image: the prompt did not reach the engine")
	}
}
