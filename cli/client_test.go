package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api/wire/wiretest"
	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/scheduler"
)

// fakeAPI is a stand-in VramCram server for the client commands: it accepts
// one job and, once the job is submitted, plays script on /events and then
// reports the job as final.
type fakeAPI struct {
	t         *testing.T
	srv       *httptest.Server
	noEvents  bool              // /events answers 404
	final     map[string]any    // GET /jobs/{id} once the script has played
	result    any               // GET /jobs/{id}/result
	script    []scheduler.Event // played after POST /jobs
	mu        sync.Mutex
	subs      []chan scheduler.Event
	submitted bool
	played    bool
	bodies    []map[string]any
}

const fakeID = "fakejob0000000000001"

func newFakeAPI(t *testing.T, f *fakeAPI) *fakeAPI {
	f.t = t
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", f.events)
	mux.HandleFunc("POST /jobs", f.submit)
	mux.HandleFunc("GET /jobs/{id}", f.job)
	mux.HandleFunc("GET /jobs/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		wiretest.WriteJSON(w, http.StatusOK, f.result)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) events(w http.ResponseWriter, r *http.Request) {
	if f.noEvents {
		wiretest.WriteJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found", "message": "no such route"}})
		return
	}
	ch := make(chan scheduler.Event, len(f.script)+1)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	wiretest.ServeEvents(w, r, ch)
}

func (f *fakeAPI) submit(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.submitted = true
	for _, ch := range f.subs {
		for _, ev := range f.script {
			ch <- ev
		}
	}
	f.played = true
	f.mu.Unlock()
	wiretest.WriteJSON(w, http.StatusAccepted, map[string]string{"job_id": fakeID, "status": "queued"})
}

func (f *fakeAPI) job(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != fakeID {
		wiretest.WriteJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found", "message": "no job"}})
		return
	}
	f.mu.Lock()
	played := f.played
	f.mu.Unlock()
	if !played {
		wiretest.WriteJSON(w, http.StatusOK, map[string]any{"job_id": fakeID, "status": "queued", "queue_position": 0})
		return
	}
	wiretest.WriteJSON(w, http.StatusOK, f.final)
}

// runCLI runs a client command in-process against url.
func runCLI(t *testing.T, url string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args[0], args[1:], IO{
		stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
		getenv: func(k string) string {
			if k == EnvURL {
				return url
			}
			return ""
		},
	})
	return code, out.String(), errb.String()
}

func completedJob(typ string) map[string]any {
	now := time.Now().UTC()
	return map[string]any{
		"job_id": fakeID, "status": "completed", "model": "sd", "type": typ, "attempts": 1, "max_attempts": 3,
		"created_at": now.Add(-3 * time.Second), "started_at": now.Add(-2 * time.Second), "finished_at": now,
	}
}

func TestCLI_SubmitWaitDiffusionWritesImages(t *testing.T) {
	red, blue := wiretest.PNG(t, color.RGBA{255, 0, 0, 255}), wiretest.PNG(t, color.RGBA{0, 0, 255, 255})
	f := newFakeAPI(t, &fakeAPI{
		final:  completedJob("diffusion"),
		result: wiretest.DiffusionResult(red, blue),
		script: []scheduler.Event{
			{Type: scheduler.EvModelLoading, Model: "sd", VRAMMB: 8192},
			{Type: scheduler.EvModelReady, Model: "sd", Seconds: 1.25},
			{Type: scheduler.EvJobStarted, Model: "sd", JobID: fakeID},
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Step: 1, Steps: 3},
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Step: 2, Steps: 3},
			{Type: scheduler.EvJobProgress, Model: "other", JobID: "someone-else", Step: 9, Steps: 9},
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Step: 3, Steps: 3},
			{Type: scheduler.EvJobFinished, Model: "sd", JobID: fakeID, State: "completed"},
		},
	})
	out := filepath.Join(t.TempDir(), "cat.png")
	code, stdout, stderr := runCLI(t, f.srv.URL, "submit", "-m", "sd", "--wait", "-o", out,
		"--params", `{"steps":3}`, "a", "red", "cat")
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	want := []string{strings.TrimSuffix(out, ".png") + "-1.png", strings.TrimSuffix(out, ".png") + "-2.png"}
	if got := strings.Fields(stdout); !slices.Equal(got, want) {
		t.Fatalf("stdout %q, want the paths %q", stdout, want)
	}
	for i, img := range [][]byte{red, blue} {
		b, err := os.ReadFile(want[i])
		if err != nil || !bytes.Equal(b, img) {
			t.Fatalf("image %d: %v, %d bytes, want the served PNG", i+1, err, len(b))
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("image %d is not a PNG: %v", i+1, err)
		}
	}
	for _, line := range []string{"job " + fakeID + " queued for sd", "loading model sd (8192 MiB reserved)",
		"model sd ready (loaded in 1.25s)", "running on sd", "step 1/3\nstep 2/3\nstep 3/3\n", "completed in 3s"} {
		if !strings.Contains(stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, stderr)
		}
	}
	if strings.Contains(stderr, "9/9") {
		t.Errorf("another job's progress shown:\n%s", stderr)
	}
	if got := f.bodies[0]; got["prompt"] != "a red cat" || got["model"] != "sd" || got["params"].(map[string]any)["steps"] != 3.0 {
		t.Errorf("submitted %v", got)
	}
}

func TestCLI_SubmitWaitPollsWithoutEvents(t *testing.T) {
	f := newFakeAPI(t, &fakeAPI{
		noEvents: true,
		final:    completedJob("llm"),
		result:   map[string]any{"type": "llm", "text": "echo: hi"},
	})
	code, stdout, stderr := runCLI(t, f.srv.URL, "submit", "-m", "sd", "--wait", "--stream", "hi")
	if code != 0 || stdout != "echo: hi\n" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "no event stream") {
		t.Errorf("stderr does not say it polls:\n%s", stderr)
	}
}

func TestCLI_SubmitWaitRetryAndLostText(t *testing.T) {
	f := newFakeAPI(t, &fakeAPI{
		final:  completedJob("llm"),
		result: map[string]any{"type": "llm", "text": "echo: hello world"},
		script: []scheduler.Event{
			{Type: scheduler.EvJobStarted, Model: "sd", JobID: fakeID},
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Tokens: 1, Chunk: "echo:"},
			{Type: scheduler.EvJobFinished, Model: "sd", JobID: fakeID, State: "queued", Error: "engine exited"},
			{Type: scheduler.EvJobStarted, Model: "sd", JobID: fakeID},
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Tokens: 1, Chunk: "echo:"},
			// " hello" is lost (a slow reader loses events).
			{Type: scheduler.EvJobProgress, Model: "sd", JobID: fakeID, Tokens: 3, Chunk: " world"},
			{Type: scheduler.EvJobFinished, Model: "sd", JobID: fakeID, State: "completed"},
		},
	})
	code, stdout, stderr := runCLI(t, f.srv.URL, "submit", "-m", "sd", "--wait", "--stream", "hello world")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The first attempt's text, then the second's, then the whole result.
	if want := "echo:\necho: world\necho: hello world\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	for _, s := range []string{"attempt failed (engine exited); the job is queued again", "some streamed text was lost"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
}

func TestCLI_SubmitWaitFailedJob(t *testing.T) {
	final := completedJob("llm")
	final["status"], final["error"], final["attempts"] = "failed", "model failed to load: bad file", 3
	f := newFakeAPI(t, &fakeAPI{
		final:  final,
		script: []scheduler.Event{{Type: scheduler.EvJobFinished, Model: "sd", JobID: fakeID, State: "failed"}},
	})
	code, stdout, stderr := runCLI(t, f.srv.URL, "submit", "-m", "sd", "--wait", "-q", "x")
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	if want := "vramcram submit: job " + fakeID + " failed after 3 attempt(s): model failed to load: bad file\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

func TestCLI_ResultImages(t *testing.T) {
	img := wiretest.PNG(t, color.RGBA{0, 255, 0, 255})
	f := newFakeAPI(t, &fakeAPI{result: wiretest.DiffusionResult(img)})
	dir := t.TempDir()
	t.Chdir(dir)
	code, stdout, stderr := runCLI(t, f.srv.URL, "result", fakeID)
	if code != 0 || stdout != fakeID+".png\n" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, fakeID+".png")); err != nil || !bytes.Equal(b, img) {
		t.Fatalf("default file: %v", err)
	}
	code, stdout, _ = runCLI(t, f.srv.URL, "result", "-o", "out.png", fakeID)
	if code != 0 || stdout != "out.png\n" {
		t.Fatalf("-o: exit %d, stdout %q", code, stdout)
	}
	f.result = map[string]any{"type": "diffusion", "images": []map[string]string{{"format": "png", "b64": "%%%"}}}
	code, _, stderr = runCLI(t, f.srv.URL, "result", fakeID)
	if code != 1 || !strings.Contains(stderr, "bad base64") {
		t.Fatalf("bad image data: exit %d, %s", code, stderr)
	}
}

func TestImagePaths(t *testing.T) {
	for _, tc := range []struct {
		output  string
		formats []string
		want    []string
	}{
		{"", []string{"png"}, []string{"ID.png"}},
		{"", []string{"png", "jpeg"}, []string{"ID-1.png", "ID-2.jpeg"}},
		{"", []string{""}, []string{"ID.png"}},
		{"out/cat.png", []string{"png"}, []string{"out/cat.png"}},
		{"cat.webp", []string{"png", "png", "png"}, []string{"cat-1.webp", "cat-2.webp", "cat-3.webp"}},
		{"cat", []string{"png", "png"}, []string{"cat-1", "cat-2"}},
	} {
		if got := imagePaths(tc.output, "ID", tc.formats); !slices.Equal(got, tc.want) {
			t.Errorf("imagePaths(%q, %v) = %v, want %v", tc.output, tc.formats, got, tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"ID"}, []string{"ID"}, false},
		{[]string{"ID", "--json"}, []string{"ID"}, true},
		{[]string{"-json", "a", "b"}, []string{"a", "b"}, true},
		{[]string{"a", "--", "--json", "-x"}, []string{"a", "--json", "-x"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		j := fs.Bool("json", false, "")
		pos, err := parseArgs(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *j != tc.json {
			t.Errorf("parseArgs(%q) = %q, json %v, %v; want %q, json %v", tc.args, pos, *j, err, tc.pos, tc.json)
		}
	}
}

func TestCLI_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"submit", "hello"}, "-m MODEL is required"},
		{[]string{"submit", "-m", "a", "--params", "[1]", "x"}, "--params: want a JSON object"},
		{[]string{"status"}, "want one argument, the job ID; got 0"},
		{[]string{"cancel", "a", "b"}, "got 2"},
		{[]string{"ps", "extra"}, "ps takes no arguments"},
		{[]string{"load"}, "the model name"},
		{[]string{"status", "--url", "ftp://x", "ID"}, "want http://HOST:PORT"},
		{[]string{"submit", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		code, stdout, stderr := runCLI(t, "http://127.0.0.1:1", tc.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, stdout, stderr, tc.msg)
		}
	}
}

func TestReadPrompt(t *testing.T) {
	p, err := readPrompt(strings.NewReader("from stdin\n"), []string{"-"})
	if err != nil || p != "from stdin" {
		t.Errorf("'-': %q, %v", p, err)
	}
	p, err = readPrompt(strings.NewReader("piped\n\n"), nil)
	if err != nil || p != "piped" {
		t.Errorf("no args: %q, %v", p, err)
	}
	if _, err := readPrompt(strings.NewReader(" \n"), nil); err == nil {
		t.Error("an empty prompt was accepted")
	}
	p, _ = readPrompt(nil, []string{"two", "words"})
	if p != "two words" {
		t.Errorf("args: %q", p)
	}
}

// The client's variables are not config keys: a daemon started from a shell
// that has them set must not refuse them as unknown keys.
func TestLoadConfig_ClientEnvIsNotConfig(t *testing.T) {
	_, err := config.Load("", []string{EnvURL + "=http://gpu-box:8000", EnvAPIKey + "=secret", "VRAMCRAM_SERVER__PORT=8001"})
	if err != nil {
		t.Fatalf("LoadConfig with the client's variables: %v", err)
	}
}
