package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// imageSetup is a test server whose images live in a temp dir.
func imageSetup(t *testing.T, tweak ...func(*api.Config)) *testBundle {
	t.Helper()
	dir := t.TempDir()
	return setupWith(t, setupOpts{config: func(c *api.Config) {
		c.ImageDir = dir
		c.MaxPromptChars = 1000
		for _, f := range tweak {
			f(c)
		}
	}})
}

// finishDiffusion plays the engine for the queued job id: claim, write n
// images, complete, publish the end. It returns the images.
func finishDiffusion(t testing.TB, b *testBundle, id string, n int) [][]byte {
	t.Helper()
	images, err := playEngine(b, id, n)
	if err != nil {
		t.Fatal(err)
	}
	return images
}

func playEngine(b *testBundle, id string, n int) ([][]byte, error) {
	j, err := b.store.Claim("sd")
	if err != nil || j.ID != id {
		return nil, fmt.Errorf("claim: %v %s", err, j.ID)
	}
	res := sdcpp.Result{Type: engine.KindDiffusion, Seed: 9, Width: 64, Height: 32, Steps: 4}
	var images [][]byte
	for i := range n {
		img := image.NewGray(image.Rect(0, 0, 64, 32))
		img.Pix[0] = uint8(10 + i)
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return nil, err
		}
		path, err := sdcpp.ImagePath(b.cfg.ImageDir, id, fmt.Sprintf("%d.png", i))
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o640); err != nil {
			return nil, err
		}
		images = append(images, buf.Bytes())
		res.Images = append(res.Images, sdcpp.Image{Format: "png", File: fmt.Sprintf("%d.png", i)})
	}
	doc, _ := json.Marshal(res)
	if err := b.store.Complete(id, doc); err != nil {
		return nil, err
	}
	b.bus.Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: "sd", JobID: id, State: "completed"})
	return images, nil
}

func TestSubmit_DiffusionParamsInvalid(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	for _, tt := range []struct{ params, field string }{
		{`{"width":500}`, "params.width"},
		{`{"height":8192}`, "params.height"},
		{`{"steps":0}`, "params.steps"},
		{`{"cfg_scale":99}`, "params.cfg_scale"},
		{`{"seed":-5}`, "params.seed"},
		{`{"count":20}`, "params.count"},
		{`{"max_tokens":5}`, "params.max_tokens"},
		{`{"sampling_method":"--help"}`, "params.sampling_method"},
	} {
		rec := b.do(t, http.MethodPost, "/jobs", `{"model":"sd","prompt":"a cat","params":`+tt.params+`}`)
		wantError(t, rec, http.StatusBadRequest, api.CodeInvalid, tt.field+": ")
	}
}

func TestGetResult_Diffusion(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	id := b.submit(t, `{"model":"sd","prompt":"a cat","params":{"count":2}}`)
	images := finishDiffusion(t, b, id, 2)

	rec := b.do(t, http.MethodGet, "/jobs/"+id+"/result", "")
	var res struct {
		Type   string
		Seed   int64
		Width  int
		Height int
		Images []map[string]string
	}
	decodeJSON(t, rec, &res)
	if rec.Code != 200 || res.Type != "diffusion" || res.Seed != 9 || res.Width != 64 || res.Height != 32 || len(res.Images) != 2 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	for i, im := range res.Images {
		got, err := base64.StdEncoding.DecodeString(im["b64"])
		if err != nil || !bytes.Equal(got, images[i]) || im["format"] != "png" || im["url"] != fmt.Sprintf("/jobs/%s/images/%d", id, i) {
			t.Fatalf("image %d: %v", i, im)
		}
		if _, ok := im["file"]; ok {
			t.Fatalf("image %d shows the file name", i)
		}
	}

	for accept, wantPNG := range map[string]bool{
		"image/png":                           true,
		"image/*":                             true,
		"application/json, image/png;q=0.5":   false,
		"image/png, application/json;q=0.9":   true,
		"*/*":                                 false,
		"":                                    false,
		"text/html,image/png;q=0.9,*/*;q=0.8": true,
	} {
		rec := b.do(t, http.MethodGet, "/jobs/"+id+"/result", "", "Accept", accept)
		isPNG := rec.Header().Get("Content-Type") == "image/png"
		if rec.Code != 200 || isPNG != wantPNG || (isPNG && !bytes.Equal(rec.Body.Bytes(), images[0])) {
			t.Errorf("Accept %q: %d %s, png %v", accept, rec.Code, rec.Header().Get("Content-Type"), isPNG)
		}
	}
}

func TestGetImage(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	id := b.submit(t, `{"model":"sd","prompt":"a cat"}`)
	queued := b.submit(t, `{"model":"sd","prompt":"later"}`)
	images := finishDiffusion(t, b, id, 2)

	rec := b.do(t, http.MethodGet, "/jobs/"+id+"/images/1", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "image/png" || !bytes.Equal(rec.Body.Bytes(), images[1]) {
		t.Fatalf("%d %s", rec.Code, rec.Header())
	}
	if cd := rec.Header().Get("Content-Disposition"); !strings.Contains(cd, id+"-1.png") {
		t.Fatalf("Content-Disposition %q", cd)
	}
	wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/images/2", ""), 404, api.CodeNotFound, "has 2 image(s)")
	for _, n := range []string{"-1", "x", "00", "01", "+1", "-0", "1.0", "%201"} {
		// One image, one URL: only the canonical decimal form is an index.
		wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/images/"+n, ""), 400, api.CodeInvalid, "image number")
	}
	wantError(t, b.do(t, http.MethodGet, "/jobs/"+queued+"/images/0", ""), 409, api.CodeNotCompleted, "queued")
	wantError(t, b.do(t, http.MethodGet, "/jobs/nosuchjob/images/0", ""), 404, api.CodeNotFound)

	llm := b.enqueue(t, "llama")
	b.claim(t, "llama")
	if err := b.store.Complete(llm.ID, []byte(`{"type":"llm","text":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	wantError(t, b.do(t, http.MethodGet, "/jobs/"+llm.ID+"/images/0", ""), 404, api.CodeNotFound, "not a diffusion job")
	if rec := b.do(t, http.MethodGet, "/jobs/"+llm.ID+"/result", "", "Accept", "image/png"); rec.Code != 200 ||
		!strings.Contains(rec.Body.String(), `"text":"hi"`) {
		t.Fatalf("LLM result with Accept image/png: %d %s", rec.Code, rec.Body)
	}

	// Files gone (deleted by hand): 404, not a 500.
	if err := sdcpp.RemoveJobImages(b.cfg.ImageDir, id); err != nil {
		t.Fatal(err)
	}
	wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/images/0", ""), 404, api.CodeNotFound, "gone")
	wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/result", ""), 404, api.CodeNotFound, "gone")
}

// openAIErr is OpenAI's error shape.
type openAIErr struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func wantOpenAIError(t *testing.T, rec *httptest.ResponseRecorder, status int, typ, code, msg string) {
	t.Helper()
	var e openAIErr
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	if rec.Code != status || e.Error.Type != typ || e.Error.Code != code || !strings.Contains(e.Error.Message, msg) {
		t.Errorf("%d %s; want %d %s %s %q", rec.Code, rec.Body, status, typ, code, msg)
	}
}

// engineOnNotify makes the fake scheduler finish each queued diffusion job
// with n images (or fail it with failMsg) as soon as it is queued.
func engineOnNotify(t *testing.T, b *testBundle, n int, failMsg string) {
	b.sched.NotifyFunc = func(model string) {
		jobs, err := b.store.List(store.ListFilter{Model: model, State: store.JobStateQueued})
		if err != nil || len(jobs) != 1 {
			t.Errorf("queued: %v %d", err, len(jobs))
			return
		}
		id := jobs[0].ID
		go func() {
			if failMsg != "" {
				_, _ = b.store.Claim(model)
				_ = b.store.Fail(id, failMsg)
				b.bus.Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: model, JobID: id, State: "failed"})
				return
			}
			if _, err := playEngine(b, id, n); err != nil {
				t.Error(err)
			}
		}()
	}
}

func TestImagesGenerations(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	engineOnNotify(t, b, 2, "")
	rec := b.do(t, http.MethodPost, "/v1/images/generations",
		`{"model":"sd","prompt":"a cat","n":2,"size":"96x64","negative_prompt":"dog","steps":4,"cfg_scale":2,"seed":9,"user":"u1"}`)
	var out struct {
		Created int64
		Data    []map[string]string
	}
	decodeJSON(t, rec, &out)
	if rec.Code != 200 || out.Created == 0 || len(out.Data) != 2 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	id := rec.Header().Get("X-Job-Id")
	j, err := b.store.Get(id)
	if err != nil || j.State != store.JobStateCompleted || j.Type != "diffusion" ||
		string(j.Params) != `{"width":96,"height":64,"steps":4,"cfg_scale":2,"seed":9,"count":2,"negative_prompt":"dog"}` {
		t.Fatalf("job %+v %s (%v)", j, j.Params, err)
	}
	for i, d := range out.Data {
		img, err := base64.StdEncoding.DecodeString(d["b64_json"])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(img)); err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
	}

	// response_format url; model left out (one diffusion model configured).
	rec = b.do(t, http.MethodPost, "/v1/images/generations", `{"prompt":"a dog","response_format":"url"}`)
	decodeJSON(t, rec, &out)
	id = rec.Header().Get("X-Job-Id")
	if rec.Code != 200 || len(out.Data) != 2 || out.Data[0]["url"] != "http://example.com/jobs/"+id+"/images/0" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestImagesGenerations_Errors(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	tests := []struct {
		body                 string
		status               int
		typ, code, msg       string
		otherDiffusionModels bool
	}{
		{`{"model":"nope","prompt":"x"}`, 404, "invalid_request_error", "model_not_found", `unknown model "nope"`, false},
		{`{"model":"llama","prompt":"x"}`, 400, "invalid_request_error", "invalid", "not an image model", false},
		{`{"model":"sd"}`, 400, "invalid_request_error", "invalid", "prompt: required", false},
		{`{"model":"sd","prompt":"x","size":"big"}`, 400, "invalid_request_error", "invalid", "size: must be WIDTHxHEIGHT", false},
		{`{"model":"sd","prompt":"x","size":"513x512"}`, 400, "invalid_request_error", "invalid", "size: width must be a multiple of 8", false},
		{`{"model":"sd","prompt":"x","n":9}`, 400, "invalid_request_error", "invalid", "n: must be between 1 and 8", false},
		{`{"model":"sd","prompt":"x","steps":0}`, 400, "invalid_request_error", "invalid", "steps: must be between", false},
		{`{"model":"sd","prompt":"x","response_format":"jpeg"}`, 400, "invalid_request_error", "invalid", "response_format", false},
		{`{"model":"sd","prompt":"x","output_format":"webp"}`, 400, "invalid_request_error", "invalid", "output_format", false},
		{`{"model":"sd","prompt":"x","style_preset":"y"}`, 400, "invalid_request_error", "invalid", "style_preset: unknown field", false},
		{`{"model":"sd",`, 400, "invalid_request_error", "invalid_json", "malformed JSON", false},
		{`{"prompt":"x"}`, 400, "invalid_request_error", "invalid", "model: required", true},
	}
	for _, tt := range tests {
		bb := b
		if tt.otherDiffusionModels {
			bb = imageSetup(t, func(c *api.Config) {
				c.ModelTypes = api.ModelKinds{"sd": engine.KindDiffusion, "flux": engine.KindDiffusion}
			})
		}
		rec := bb.do(t, http.MethodPost, "/v1/images/generations", tt.body)
		wantOpenAIError(t, rec, tt.status, tt.typ, tt.code, tt.msg)
	}

	b.sched.AdmitFunc = func(context.Context, string) error {
		return fmt.Errorf("%w: sd: binary missing", scheduler.ErrUnavailable)
	}
	wantOpenAIError(t, b.do(t, http.MethodPost, "/v1/images/generations", `{"model":"sd","prompt":"x"}`),
		503, "server_error", "model_unavailable", "binary missing")
}

func TestImagesGenerations_JobFails(t *testing.T) {
	t.Parallel()
	b := imageSetup(t)
	engineOnNotify(t, b, 0, "job rejected: engine sd exited with code 1: file /m/x not found")
	rec := b.do(t, http.MethodPost, "/v1/images/generations", `{"model":"sd","prompt":"x"}`)
	wantOpenAIError(t, rec, 500, "server_error", "job_failed", "file /m/x not found")
}

func TestImagesGenerations_ClientLeavesCancels(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{false, true} {
		t.Run(map[bool]string{false: "Queued", true: "Running"}[running], func(t *testing.T) {
			t.Parallel()
			b := imageSetup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			queued := make(chan string, 1)
			b.sched.NotifyFunc = func(model string) {
				if running {
					j, _ := b.store.Claim(model)
					queued <- j.ID
					return
				}
				jobs, _ := b.store.List(store.ListFilter{Model: model})
				queued <- jobs[0].ID
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(`{"model":"sd","prompt":"x"}`)).WithContext(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				b.handler.ServeHTTP(httptest.NewRecorder(), req)
			}()
			id := <-queued
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("handler still waiting after the client left")
			}
			j, err := b.store.Get(id)
			if err != nil || j.State != store.JobStateCancelled {
				t.Fatalf("job %+v %v", j, err)
			}
			if got := b.cancels.get(); running != (len(got) == 1 && got[0] == id) {
				t.Fatalf("scheduler cancels %v (running %v)", got, running)
			}
		})
	}
}
