package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/store"
)

// FuzzSubmit posts random bodies to POST /jobs. Whatever the body, the server
// must not panic or answer 5xx, must answer valid JSON (the error shape on
// every error), and may answer 202 only for a body that decodes to a valid
// job, which is then queued in the store as sent.
func FuzzSubmit(f *testing.F) {
	for _, seed := range []string{
		`{"model":"llama","prompt":"hello"}`,
		`{"model":"sd","prompt":"a cat","params":{"steps":4}}`,
		`{"model":"qwen","prompt":"x","priority":100,"params":{"max_tokens":5,"temperature":0.1,"top_p":1,"stop":["\n"],"seed":-1}}`,
		`{"model":"llama","prompt":"x","params":null}`,
		`{"model":"llama","prompt":"\u00e9\ud800"}`,
		`{"model":"llama","prompt":" "}`,
		`{"model":"../../etc/passwd","prompt":"x"}`,
		`{"model":"llama","prompt":5}`,
		`{"model":"llama","prompt":"x","params":{"foo":1}}`,
		`{"model":"llama","prompt":"x","params":[]}`,
		`{"model":"sd","prompt":"x","params":"y"}`,
		`{"model":"llama","prompt":"x","priority":"high"}`,
		`{"model":"llama","prompt":"x"}{}`,
		`{"model":"llama","prompt":"x","extra":1}`,
		`{"MODEL":"llama","Prompt":"x"}`,
		`[]`, `null`, `""`, ``, `{`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	b := setupWith(f, setupOpts{config: func(c *api.Config) { c.MaxBodyBytes = 4096; c.MaxPromptChars = 64 }})

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/jobs", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		b.handler.ServeHTTP(rec, req)

		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("status %d: response is not JSON: %q", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusAccepted {
			if rec.Code < 400 {
				t.Fatalf("status %d for body %q", rec.Code, body)
			}
			if _, err := parseError(rec.Body.Bytes(), "status"); err != nil {
				t.Fatalf("status %d: error body %s: %v", rec.Code, rec.Body, err)
			}
			return
		}

		// A 202: the body must be a valid job by an independent reading ...
		var want struct {
			Model    string          `json:"model"`
			Prompt   *string         `json:"prompt"`
			Priority *int            `json:"priority"`
			Params   json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("202 for a body that does not decode (%v): %q", err, body)
		}
		typ, known := testModels[want.Model]
		if !known || want.Prompt == nil || strings.TrimSpace(*want.Prompt) == "" {
			t.Fatalf("202 for an invalid job: %q", body)
		}
		prio := 0
		if want.Priority != nil {
			prio = *want.Priority
		}
		if prio < store.MinPriority || prio > store.MaxPriority {
			t.Fatalf("202 with priority %d: %q", prio, body)
		}
		if p := bytes.TrimSpace(want.Params); len(p) > 0 && p[0] != '{' && !bytes.Equal(p, []byte("null")) {
			t.Fatalf("202 with params that are not an object: %q", body)
		}

		// ... and be in the store as sent.
		var out struct {
			JobID  string `json:"job_id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Status != "queued" {
			t.Fatalf("202 body %s (%v)", rec.Body, err)
		}
		if loc := rec.Header().Get("Location"); loc != "/jobs/"+out.JobID {
			t.Fatalf("Location %q", loc)
		}
		j, err := b.store.Get(out.JobID)
		if err != nil {
			t.Fatalf("202 but job %s not in the store: %v", out.JobID, err)
		}
		if j.State != store.JobStateQueued || j.Model != want.Model || j.Type != string(typ) ||
			j.Prompt != *want.Prompt || j.Priority != prio {
			t.Fatalf("stored %+v for body %q", j, body)
		}
		if len(j.Params) > 0 && !json.Valid(j.Params) {
			t.Fatalf("stored params %q are not JSON", j.Params)
		}
		// Keep the store small across a long run.
		if _, err := b.store.Cancel(j.ID); err != nil {
			t.Fatal(err)
		}
	})
}
