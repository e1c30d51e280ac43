package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

func TestSubmit_Accepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantModel  string
		wantType   string
		wantPrompt string
		wantPrio   int
		wantParams string // stored params; "" = none
	}{
		{
			name:      "Minimal",
			body:      `{"model":"llama","prompt":"hello"}`,
			wantModel: "llama", wantType: "llm", wantPrompt: "hello",
		},
		{
			name: "NormalisedLLMParams",
			body: `{"model":"llama","prompt":"hello","priority":5,
				"params":{ "top_p" : 0.5, "max_tokens":16,"temperature":0.7,"stop":["\n"],"seed":7}}`,
			wantModel: "llama", wantType: "llm", wantPrompt: "hello", wantPrio: 5,
			wantParams: `{"max_tokens":16,"temperature":0.7,"top_p":0.5,"stop":["\n"],"seed":7}`,
		},
		{
			name:      "EmptyParamsDropped",
			body:      `{"model":"qwen","prompt":"hi","params":{"stop":[]}}`,
			wantModel: "qwen", wantType: "llm", wantPrompt: "hi",
		},
		{
			name:      "NullParamsAndPriority",
			body:      `{"model":"qwen","prompt":"hi","params":null,"priority":null}`,
			wantModel: "qwen", wantType: "llm", wantPrompt: "hi",
		},
		{
			name:      "PriorityBounds",
			body:      `{"model":"llama","prompt":"hi","priority":-100}`,
			wantModel: "llama", wantType: "llm", wantPrompt: "hi", wantPrio: -100,
		},
		{
			name:      "DiffusionParamsKept",
			body:      `{"model":"sd","prompt":"a cat","params":{"steps": 4, "width":512}}`,
			wantModel: "sd", wantType: "diffusion", wantPrompt: "a cat",
			wantParams: `{"width":512,"steps":4}`, // normalised: field order of sdcpp.Params
		},
		{
			name:      "DiffusionNullParams",
			body:      `{"model":"sd","prompt":"a cat","params":null}`,
			wantModel: "sd", wantType: "diffusion", wantPrompt: "a cat",
		},
		{
			// 10 runes (the test limit), 20 bytes.
			name:      "PromptLimitInRunes",
			body:      `{"model":"llama","prompt":"éééééééééé"}`,
			wantModel: "llama", wantType: "llm", wantPrompt: "éééééééééé",
		},
		{
			name:      "TrailingWhitespace",
			body:      "{\"model\":\"llama\",\"prompt\":\"  x \"}\n\t ",
			wantModel: "llama", wantType: "llm", wantPrompt: "  x ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			sub := b.bus.Subscribe(8)
			defer sub.Close()

			rec := b.do(t, http.MethodPost, "/jobs", tt.body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			if got := keys(t, rec.Body.Bytes()); len(got) != 2 {
				t.Errorf("body %s: want exactly job_id and status", rec.Body)
			}
			var out struct {
				JobID  string `json:"job_id"`
				Status string `json:"status"`
			}
			decodeJSON(t, rec, &out)
			if out.Status != "queued" || !store.ValidID(out.JobID) {
				t.Fatalf("body %s", rec.Body)
			}
			if loc := rec.Header().Get("Location"); loc != "/jobs/"+out.JobID {
				t.Errorf("Location %q", loc)
			}
			if want := `{"job_id":"` + out.JobID + `","status":"queued"}` + "\n"; rec.Body.String() != want {
				t.Errorf("body %q, want %q", rec.Body, want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}

			j, err := b.store.Get(out.JobID)
			if err != nil {
				t.Fatalf("job not in the store: %v", err)
			}
			if j.State != store.JobStateQueued || j.Model != tt.wantModel || j.Type != tt.wantType ||
				j.Prompt != tt.wantPrompt || j.Priority != tt.wantPrio || j.MaxAttempts != 4 || j.Attempts != 0 {
				t.Errorf("stored job %+v", j)
			}
			if string(j.Params) != tt.wantParams {
				t.Errorf("stored params %s, want %s", j.Params, tt.wantParams)
			}
			if got := b.admits.get(); !slices.Equal(got, []string{tt.wantModel}) {
				t.Errorf("Admit calls %v", got)
			}
			if got := b.notifs.get(); !slices.Equal(got, []string{tt.wantModel}) {
				t.Errorf("Notify calls %v", got)
			}
			select {
			case ev := <-sub.C:
				if ev.Type != scheduler.EvJobQueued || ev.JobID != out.JobID || ev.Model != tt.wantModel {
					t.Errorf("event %+v", ev)
				}
			default:
				t.Error("no job_queued event published")
			}
		})
	}
}

// ?pretty indents the answer to a submit, as it does every JSON answer.
func TestSubmit_Pretty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.do(t, http.MethodPost, "/jobs?pretty", `{"model":"llama","prompt":"hello"}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	var out struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	decodeJSON(t, rec, &out)
	if want := "{\n  \"job_id\": \"" + out.JobID + "\",\n  \"status\": \"queued\"\n}\n"; rec.Body.String() != want {
		t.Errorf("body %q, want %q", rec.Body, want)
	}
}

func TestSubmit_Invalid(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 11) // 11 runes > the test limit of 10
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		msg    []string // parts the message must contain
	}{
		{"MalformedJSON", `{"model":"llama",`, 400, api.CodeInvalidJSON, nil},
		{"SyntaxError", `{"model" "llama"}`, 400, api.CodeInvalidJSON, []string{"malformed JSON"}},
		{"EmptyBody", ``, 400, api.CodeInvalidJSON, []string{"empty"}},
		{"WhitespaceBody", " \n\t", 400, api.CodeInvalidJSON, []string{"empty"}},
		{"TrailingObject", `{"model":"llama","prompt":"x"}{}`, 400, api.CodeInvalidJSON, []string{"after the JSON object"}},
		{"TrailingGarbage", `{"model":"llama","prompt":"x"} x`, 400, api.CodeInvalidJSON, []string{"after the JSON object"}},
		{"NotAnObject", `["llama","x"]`, 400, api.CodeInvalidJSON, []string{"JSON object"}},
		{"StringBody", `"llama"`, 400, api.CodeInvalidJSON, []string{"JSON object"}},
		{"NullBody", `null`, 400, api.CodeInvalid, []string{"model"}},
		{"PromptNumber", `{"model":"llama","prompt":5}`, 400, api.CodeInvalid, []string{"prompt"}},
		{"ModelNumber", `{"model":5,"prompt":"x"}`, 400, api.CodeInvalid, []string{"model"}},
		{"PriorityString", `{"model":"llama","prompt":"x","priority":"high"}`, 400, api.CodeInvalid, []string{"priority"}},
		{"PriorityFloat", `{"model":"llama","prompt":"x","priority":1.5}`, 400, api.CodeInvalid, []string{"priority"}},
		{"ParamsArray", `{"model":"llama","prompt":"x","params":[]}`, 400, api.CodeInvalid, []string{"params"}},
		{"ParamsString", `{"model":"llama","prompt":"x","params":"max_tokens=5"}`, 400, api.CodeInvalid, []string{"params"}},
		{"DiffusionParamsArray", `{"model":"sd","prompt":"x","params":[]}`, 400, api.CodeInvalid, []string{"params"}},
		{"DiffusionParamsNumber", `{"model":"sd","prompt":"x","params":5}`, 400, api.CodeInvalid, []string{"params"}},
		{"ParamsWrongFieldType", `{"model":"llama","prompt":"x","params":{"max_tokens":"many"}}`, 400, api.CodeInvalid, []string{"params.max_tokens"}},
		{"UnknownField", `{"model":"llama","prompt":"x","temperature":1}`, 400, api.CodeInvalid, []string{"temperature", "unknown field"}},
		{"UnknownParamsField", `{"model":"llama","prompt":"x","params":{"foo":1}}`, 400, api.CodeInvalid, []string{"params.foo", "unknown field"}},
		{"MissingModel", `{"prompt":"x"}`, 400, api.CodeInvalid, []string{"model", "required"}},
		{"EmptyModel", `{"model":"","prompt":"x"}`, 400, api.CodeInvalid, []string{"model", "required"}},
		{"MissingPrompt", `{"model":"llama"}`, 400, api.CodeInvalid, []string{"prompt", "required"}},
		{"NullPrompt", `{"model":"llama","prompt":null}`, 400, api.CodeInvalid, []string{"prompt", "required"}},
		{"BlankPrompt", `{"model":"llama","prompt":" \n\t\u00a0"}`, 400, api.CodeInvalid, []string{"prompt", "required"}},
		{"PromptTooLong", `{"model":"llama","prompt":"` + long + `"}`, 400, api.CodeInvalid, []string{"prompt", "11", "10"}},
		{"PriorityTooHigh", `{"model":"llama","prompt":"x","priority":101}`, 400, api.CodeInvalid, []string{"priority", "-100", "100"}},
		{"PriorityTooLow", `{"model":"llama","prompt":"x","priority":-101}`, 400, api.CodeInvalid, []string{"priority"}},
		{"PriorityHuge", `{"model":"llama","prompt":"x","priority":99999999999999999999}`, 400, api.CodeInvalid, []string{"priority"}},
		{"MaxTokensZero", `{"model":"llama","prompt":"x","params":{"max_tokens":0}}`, 400, api.CodeInvalid, []string{"params.max_tokens"}},
		{"MaxTokensHuge", `{"model":"llama","prompt":"x","params":{"max_tokens":1000000000}}`, 400, api.CodeInvalid, []string{"params.max_tokens"}},
		{"TemperatureNegative", `{"model":"llama","prompt":"x","params":{"temperature":-1}}`, 400, api.CodeInvalid, []string{"params.temperature"}},
		{"TemperatureOverflow", `{"model":"llama","prompt":"x","params":{"temperature":1e400}}`, 400, api.CodeInvalid, []string{"params.temperature"}},
		{"TopPTwo", `{"model":"llama","prompt":"x","params":{"top_p":2}}`, 400, api.CodeInvalid, []string{"params.top_p"}},
		{"TopPZero", `{"model":"llama","prompt":"x","params":{"top_p":0}}`, 400, api.CodeInvalid, []string{"params.top_p"}},
		{"TooManyStops", `{"model":"llama","prompt":"x","params":{"stop":["a","b","c","d","e","f","g","h","i"]}}`, 400, api.CodeInvalid, []string{"params.stop"}},
		{"EmptyStop", `{"model":"llama","prompt":"x","params":{"stop":[""]}}`, 400, api.CodeInvalid, []string{"params.stop"}},
		{"UnknownModel", `{"model":"gpt-9","prompt":"x"}`, 404, api.CodeUnknownModel, []string{"gpt-9", "llama, qwen, sd"}},
		{"ModelCaseDiffers", `{"model":"LLAMA","prompt":"x"}`, 404, api.CodeUnknownModel, []string{"LLAMA"}},
		{"ModelPathTraversal", `{"model":"../../etc/passwd","prompt":"x"}`, 404, api.CodeUnknownModel, []string{"configured models"}},
		{"ModelWithSlash", `{"model":"llama/../sd","prompt":"x"}`, 404, api.CodeUnknownModel, nil},
		{"InvalidUTF8", "{\"model\":\"llama\",\"prompt\":\"\xff\xfe\"}", 400, api.CodeInvalidJSON, []string{"UTF-8"}},
		{"InvalidUTF8InModel", "{\"model\":\"ll\xc3ama\",\"prompt\":\"x\"}", 400, api.CodeInvalidJSON, []string{"UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			rec := b.do(t, http.MethodPost, "/jobs", tt.body)
			wantError(t, rec, tt.status, tt.code, tt.msg...)
			if rec.Header().Get("Location") != "" {
				t.Error("Location set on an error")
			}
			if jobs, err := b.store.List(store.ListFilter{}); err != nil || len(jobs) != 0 {
				t.Errorf("store holds %d jobs (err %v), want none", len(jobs), err)
			}
			if got := b.notifs.get(); len(got) != 0 {
				t.Errorf("Notify called: %v", got)
			}
		})
	}
}

func TestSubmit_BodyTooLarge(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.MaxBodyBytes = 64; c.MaxPromptChars = 1000 }})
	fits := `{"model":"llama","prompt":"` + strings.Repeat("x", 64-len(`{"model":"llama","prompt":""}`)) + `"}`
	if len(fits) != 64 {
		t.Fatalf("len %d", len(fits))
	}
	b.submit(t, fits)

	rec := b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"`+strings.Repeat("x", 10000)+`"}`)
	wantError(t, rec, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, "64")
	if jobs, _ := b.store.List(store.ListFilter{}); len(jobs) != 1 {
		t.Errorf("store holds %d jobs, want 1", len(jobs))
	}
}

func TestSubmit_AdmitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
	}{
		{"Unavailable", fmt.Errorf("llama: %w: binary /opt/llama-server not found", scheduler.ErrUnavailable),
			503, api.CodeUnavailable, "binary /opt/llama-server not found"},
		{"TooLarge", fmt.Errorf("llama: %w: needs 30000 MiB, budget 23552 MiB", scheduler.ErrTooLarge),
			422, api.CodeTooLarge, "30000 MiB"},
		{"UnknownModel", fmt.Errorf("llama: %w", scheduler.ErrUnknownModel), 404, api.CodeUnknownModel, "model"},
		{"Stopped", scheduler.ErrStopped, 503, api.CodeShuttingDown, "shutting down"},
		{"Internal", errors.New("secret internal detail"), 500, api.CodeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.sched.AdmitFunc = func(context.Context, string) error { return tt.err }
			rec := b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"x"}`)
			e := wantError(t, rec, tt.status, tt.code, tt.msg)
			if tt.code == api.CodeInternal && strings.Contains(e.Error.Message, "secret") {
				t.Errorf("internal error shown to the client: %q", e.Error.Message)
			}
			if jobs, _ := b.store.List(store.ListFilter{}); len(jobs) != 0 {
				t.Errorf("store holds %d jobs, want none", len(jobs))
			}
			if got := b.notifs.get(); len(got) != 0 {
				t.Errorf("Notify called: %v", got)
			}
		})
	}
}

func TestSubmit_QueueFull(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{storeOpts: store.Options{MaxQueued: 1}})
	b.submit(t, `{"model":"llama","prompt":"x"}`)

	rec := b.do(t, http.MethodPost, "/jobs", `{"model":"sd","prompt":"y"}`)
	wantError(t, rec, http.StatusTooManyRequests, api.CodeQueueFull, "retry")
	if ra := rec.Header().Get("Retry-After"); ra == "" {
		t.Error("no Retry-After header")
	}
	if got := b.notifs.get(); len(got) != 1 {
		t.Errorf("Notify calls %v, want one", got)
	}
}

func TestSubmit_PanicIsInternal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sched.AdmitFunc = func(context.Context, string) error { panic("boom: secret") }
	rec := b.do(t, http.MethodPost, "/jobs", `{"model":"llama","prompt":"x"}`)
	e := wantError(t, rec, http.StatusInternalServerError, api.CodeInternal)
	if strings.Contains(e.Error.Message, "secret") {
		t.Errorf("panic value shown to the client: %q", e.Error.Message)
	}
}

func TestRoutes_Unknown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/nope", 404, api.CodeNotFound},
		{http.MethodGet, "/jobs/abc/result/more", 404, api.CodeNotFound},
		{http.MethodPut, "/jobs", 405, api.CodeMethod},
		{http.MethodPatch, "/jobs/abc", 405, api.CodeMethod},
		{http.MethodPost, "/health", 405, api.CodeMethod},
		{http.MethodDelete, "/models", 405, api.CodeMethod},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			rec := b.do(t, tt.method, tt.path, "")
			wantError(t, rec, tt.status, tt.code)
		})
	}
}

// jobJSON is GET /jobs/{id} as a client reads it.
type jobJSON = wire.Job

func (b *testBundle) getJob(t *testing.T, id string) jobJSON {
	t.Helper()
	rec := b.do(t, http.MethodGet, "/jobs/"+id, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /jobs/%s: %d %s", id, rec.Code, rec.Body)
	}
	var v jobJSON
	decodeJSON(t, rec, &v)
	return v
}

func TestGetJob(t *testing.T) {
	t.Parallel()

	t.Run("Queued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.submit(t, `{"model":"llama","prompt":"one","priority":3}`)
		second := b.submit(t, `{"model":"llama","prompt":"two"}`)
		other := b.submit(t, `{"model":"sd","prompt":"three"}`)

		v := b.getJob(t, first)
		if v.JobID != first || v.Status != "queued" || v.Model != "llama" || v.Type != "llm" ||
			v.Priority != 3 || v.Attempts != 0 || v.MaxAttempts != 4 || v.Error != "" {
			t.Errorf("view %+v", v)
		}
		if v.CreatedAt.IsZero() || v.StartedAt != nil || v.FinishedAt != nil || v.Progress != nil {
			t.Errorf("times/progress %+v", v)
		}
		for id, want := range map[string]int{first: 0, second: 1, other: 0} {
			if v := b.getJob(t, id); v.QueuePosition == nil || *v.QueuePosition != want {
				t.Errorf("job %s: queue_position %v, want %d", id, v.QueuePosition, want)
			}
		}
		// A raw look: omitted fields are absent, not null.
		got := keys(t, b.do(t, http.MethodGet, "/jobs/"+first, "").Body.Bytes())
		for _, k := range []string{"started_at", "finished_at", "progress", "error"} {
			if _, ok := got[k]; ok {
				t.Errorf("queued job has %q", k)
			}
		}
	})

	t.Run("Running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		var asked calls
		b.sched.JobProgressFunc = func(_ context.Context, jid string) (scheduler.Progress, bool, error) {
			asked.add(jid)
			return scheduler.Progress{Tokens: 42, Chunk: "secret partial"}, true, nil
		}
		v := b.getJob(t, id)
		if v.Status != "running" || v.Attempts != 1 || v.StartedAt == nil || v.QueuePosition != nil {
			t.Errorf("view %+v", v)
		}
		if v.Progress == nil || v.Progress.Tokens != 42 {
			t.Errorf("progress %+v", v.Progress)
		}
		if got := asked.get(); !slices.Equal(got, []string{id}) {
			t.Errorf("JobProgress calls %v", got)
		}
	})

	t.Run("RunningElsewhere", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		b.sched.JobProgressFunc = func(context.Context, string) (scheduler.Progress, bool, error) {
			return scheduler.Progress{}, false, scheduler.ErrStopped
		}
		if v := b.getJob(t, id); v.Status != "running" || v.Progress != nil {
			t.Errorf("view %+v", v)
		}
	})

	t.Run("Failed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		if err := b.store.Fail(id, "engine exited with code 1"); err != nil {
			t.Fatal(err)
		}
		v := b.getJob(t, id)
		if v.Status != "failed" || v.Error != "engine exited with code 1" || v.FinishedAt == nil || v.QueuePosition != nil {
			t.Errorf("view %+v", v)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.submit(t, `{"model":"llama","prompt":"one"}`)
		for _, path := range []string{
			"/jobs/" + store.NewID(),
			"/jobs/ABCDEF",
			"/jobs/a.b",
			"/jobs/-abc",
			"/jobs/..%2F..%2Fetc%2Fpasswd",
			"/jobs/%2e%2e",
			"/jobs/a%00b",
			"/jobs/a%20b",
			"/jobs/%C3%A9",
			"/jobs/" + strings.Repeat("a", store.MaxIDLen+1),
		} {
			for _, suffix := range []string{"", "/result"} {
				rec := b.do(t, http.MethodGet, path+suffix, "")
				wantError(t, rec, http.StatusNotFound, api.CodeNotFound)
			}
			rec := b.do(t, http.MethodDelete, path, "")
			wantError(t, rec, http.StatusNotFound, api.CodeNotFound)
		}
	})
}

func TestGetResult(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.submit(t, `{"model":"llama","prompt":"one"}`)

	e := wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/result", ""), http.StatusConflict, api.CodeNotCompleted, "queued")
	if e.Status != "queued" {
		t.Errorf("status %q, want queued", e.Status)
	}

	b.claim(t, "llama")
	e = wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/result", ""), http.StatusConflict, api.CodeNotCompleted, "running")
	if e.Status != "running" {
		t.Errorf("status %q, want running", e.Status)
	}

	result := []byte(`{"type":"llm","text":"Hello \u00e9 world","tokens":3,"nested":{"a":[1,2]}}`)
	if err := b.store.Complete(id, result); err != nil {
		t.Fatal(err)
	}
	rec := b.do(t, http.MethodGet, "/jobs/"+id+"/result", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if got := rec.Body.String(); got != string(result) {
		t.Errorf("result %s, want exactly %s", got, result)
	}

	t.Run("Failed", func(t *testing.T) {
		id := b.submit(t, `{"model":"qwen","prompt":"two"}`)
		b.claim(t, "qwen")
		if err := b.store.Fail(id, "out of memory"); err != nil {
			t.Fatal(err)
		}
		e := wantError(t, b.do(t, http.MethodGet, "/jobs/"+id+"/result", ""), http.StatusConflict, api.CodeNotCompleted, "failed", "out of memory")
		if e.Status != "failed" {
			t.Errorf("status %q", e.Status)
		}
	})
}

func TestCancelJob(t *testing.T) {
	t.Parallel()

	type cancelJSON struct {
		JobID          string `json:"job_id"`
		Status         string `json:"status"`
		PreviousStatus string `json:"previous_status"`
	}
	cancel := func(t *testing.T, b *testBundle, id string) cancelJSON {
		t.Helper()
		rec := b.do(t, http.MethodDelete, "/jobs/"+id, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("DELETE: %d %s", rec.Code, rec.Body)
		}
		var out cancelJSON
		decodeJSON(t, rec, &out)
		return out
	}

	t.Run("Queued", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sub := b.bus.Subscribe(8)
		defer sub.Close()
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		<-sub.C // job_queued

		out := cancel(t, b, id)
		if out != (cancelJSON{id, "cancelled", "queued"}) {
			t.Errorf("body %+v", out)
		}
		if j, _ := b.store.Get(id); j.State != store.JobStateCancelled {
			t.Errorf("stored state %s", j.State)
		}
		if got := b.cancels.get(); len(got) != 0 {
			t.Errorf("Scheduler.Cancel called for a queued job: %v", got)
		}
		select {
		case ev := <-sub.C:
			if ev.Type != scheduler.EvJobFinished || ev.JobID != id || ev.State != "cancelled" {
				t.Errorf("event %+v", ev)
			}
		default:
			t.Error("no job_finished event")
		}
		if _, err := b.store.Claim("llama"); !errors.Is(err, store.ErrEmpty) {
			t.Errorf("claim after cancel: %v", err)
		}
	})

	t.Run("Running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		out := cancel(t, b, id)
		if out != (cancelJSON{id, "cancelled", "running"}) {
			t.Errorf("body %+v", out)
		}
		if got := b.cancels.get(); !slices.Equal(got, []string{id}) {
			t.Errorf("Scheduler.Cancel calls %v", got)
		}
		if j, _ := b.store.Get(id); j.State != store.JobStateCancelled {
			t.Errorf("stored state %s", j.State)
		}
	})

	t.Run("RunningSchedulerFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.sched.CancelFunc = func(context.Context, string) (bool, error) { return false, scheduler.ErrStopped }
		id := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		if out := cancel(t, b, id); out.Status != "cancelled" {
			t.Errorf("body %+v", out)
		}
	})

	t.Run("Finished", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		done := b.submit(t, `{"model":"llama","prompt":"one"}`)
		b.claim(t, "llama")
		if err := b.store.Complete(done, []byte(`{"type":"llm","text":"x"}`)); err != nil {
			t.Fatal(err)
		}
		e := wantError(t, b.do(t, http.MethodDelete, "/jobs/"+done, ""), http.StatusConflict, api.CodeFinished, "completed")
		if e.Status != "completed" {
			t.Errorf("status %q", e.Status)
		}

		twice := b.submit(t, `{"model":"llama","prompt":"two"}`)
		cancel(t, b, twice)
		e = wantError(t, b.do(t, http.MethodDelete, "/jobs/"+twice, ""), http.StatusConflict, api.CodeFinished, "cancelled")
		if e.Status != "cancelled" {
			t.Errorf("status %q", e.Status)
		}
		if got := b.cancels.get(); len(got) != 0 {
			t.Errorf("Scheduler.Cancel calls %v", got)
		}
	})

	t.Run("Unknown", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wantError(t, b.do(t, http.MethodDelete, "/jobs/"+store.NewID(), ""), http.StatusNotFound, api.CodeNotFound)
	})
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)

	list := func(t *testing.T, query string) []jobJSON {
		t.Helper()
		rec := b.do(t, http.MethodGet, "/jobs"+query, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /jobs%s: %d %s", query, rec.Code, rec.Body)
		}
		var out struct {
			Jobs []jobJSON `json:"jobs"`
		}
		decodeJSON(t, rec, &out)
		if out.Jobs == nil {
			t.Fatalf("GET /jobs%s: %s: jobs must be an array", query, rec.Body)
		}
		return out.Jobs
	}
	ids := func(jobs []jobJSON) []string {
		var out []string
		for _, j := range jobs {
			out = append(out, j.JobID)
		}
		return out
	}

	if got := list(t, ""); len(got) != 0 {
		t.Fatalf("empty store: %v", got)
	}

	l1 := b.submit(t, `{"model":"llama","prompt":"1"}`)
	s1 := b.submit(t, `{"model":"sd","prompt":"2"}`)
	l2 := b.submit(t, `{"model":"llama","prompt":"3"}`)
	l3 := b.submit(t, `{"model":"llama","prompt":"4"}`)
	b.claim(t, "llama") // l1 runs
	b.sched.JobProgressFunc = func(_ context.Context, id string) (scheduler.Progress, bool, error) {
		return scheduler.Progress{Tokens: 7}, id == l1, nil
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{l3, l2, s1, l1}},
		{"?model=llama", []string{l3, l2, l1}},
		{"?model=sd", []string{s1}},
		{"?model=nope", []string{}},
		{"?state=running", []string{l1}},
		{"?state=queued", []string{l3, l2, s1}},
		{"?state=queued&model=llama", []string{l3, l2}},
		{"?state=completed", []string{}},
		{"?limit=2", []string{l3, l2}},
		{"?limit=1&model=sd", []string{s1}},
		{"?limit=1000", []string{l3, l2, s1, l1}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got := list(t, tt.query)
			if g := ids(got); !slices.Equal(g, tt.want) && !(len(g) == 0 && len(tt.want) == 0) {
				t.Errorf("ids %v, want %v", g, tt.want)
			}
			for _, j := range got {
				switch j.Status {
				case "queued":
					if j.QueuePosition == nil {
						t.Errorf("%s: queued without queue_position", j.JobID)
					}
				case "running":
					if j.Progress == nil || j.Progress.Tokens != 7 {
						t.Errorf("%s: running without progress", j.JobID)
					}
				}
			}
		})
	}

	bad := []struct{ query, field string }{
		{"?limit=0", "limit"},
		{"?limit=-1", "limit"},
		{"?limit=1001", "limit"},
		{"?limit=ten", "limit"},
		{"?limit=1.5", "limit"},
		{"?state=done", "state"},
		{"?state=QUEUED", "state"},
	}
	for _, tt := range bad {
		t.Run(tt.query, func(t *testing.T) {
			wantError(t, b.do(t, http.MethodGet, "/jobs"+tt.query, ""), http.StatusBadRequest, api.CodeInvalid, tt.field)
		})
	}
}

// TestSubmit_StoredJobRoundTrips checks that what GET shows is what POST sent.
func TestSubmit_StoredJobRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.submit(t, `{"model":"qwen","prompt":"héllo","priority":-7,"params":{"max_tokens":5}}`)
	v := b.getJob(t, id)
	if v.Model != "qwen" || v.Priority != -7 || v.Type != "llm" {
		t.Errorf("view %+v", v)
	}
	j, err := b.store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	var p llamacpp.Params
	if err := json.Unmarshal(j.Params, &p); err != nil || p.MaxTokens == nil || *p.MaxTokens != 5 {
		t.Errorf("params %s: %v", j.Params, err)
	}
	if !v.CreatedAt.Equal(j.CreatedAt) {
		t.Errorf("created_at %v, stored %v", v.CreatedAt, j.CreatedAt)
	}
}

// vanishingStore is a store whose finished jobs are deleted (as retention
// does) between the handler's Get and its next call.
type vanishingStore struct {
	*store.Store
}

func (s vanishingStore) Result(id string) ([]byte, error) {
	return nil, fmt.Errorf("result %s: %w", id, store.ErrNotFound)
}

func (s vanishingStore) Cancel(id string) (store.JobState, error) {
	return "", fmt.Errorf("cancel %s: %w", id, store.ErrNotFound)
}

func TestJob_DeletedMeanwhile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := api.New(api.Config{ModelTypes: testModels}, b.sched, vanishingStore{b.store}).Handler()
	j := b.enqueue(t, "llama")
	b.claim(t, "llama")
	if err := b.store.Complete(j.ID, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		path := "/jobs/" + j.ID
		if method == http.MethodGet {
			path += "/result"
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		wantError(t, rec, http.StatusNotFound, api.CodeNotFound, j.ID)
	}
}

func TestGetJob_ETA(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) {
		return scheduler.Snapshot{Models: []scheduler.ModelStatus{
			{Name: "llama", State: scheduler.ModelUnloaded, Slots: 2, AvgJobSeconds: 2, AvgLoadSeconds: 1.5},
		}}, nil
	}
	var ids []string
	for range 3 {
		ids = append(ids, b.submit(t, `{"model":"llama","prompt":"x"}`))
	}
	// Two slots: positions 0 and 1 finish after one job, 2 after two; the
	// model is not loaded, so a load comes first.
	for k, want := range []float64{3.5, 3.5, 5.5} {
		if v := b.getJob(t, ids[k]); v.ETASeconds == nil || *v.ETASeconds != want {
			t.Errorf("job at position %d: eta %v, want %v", k, v.ETASeconds, want)
		}
	}
	other := b.submit(t, `{"model":"qwen","prompt":"x"}`)
	if v := b.getJob(t, other); v.ETASeconds != nil {
		t.Errorf("a model with no finished job has an ETA: %v", *v.ETASeconds)
	}
}

func TestListJobs_OneSnapshotPerPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var n atomic.Int64
	b.sched.SnapshotFunc = func(context.Context) (scheduler.Snapshot, error) {
		n.Add(1)
		return scheduler.Snapshot{Models: []scheduler.ModelStatus{{Name: "llama", State: scheduler.ModelReady, Slots: 1, AvgJobSeconds: 1}}}, nil
	}
	for range 5 {
		b.submit(t, `{"model":"llama","prompt":"x"}`)
	}
	rec := b.do(t, http.MethodGet, "/jobs", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"eta_seconds":5`) {
		t.Fatalf("GET /jobs: %d %s", rec.Code, rec.Body)
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("%d snapshots for one page of jobs, want 1", got)
	}
}
