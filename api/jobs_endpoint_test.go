package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/store"
)

// endpointSetup serves "llama" with chat and completions, "sd" with none.
func endpointSetup(t *testing.T) *testBundle {
	return setupWith(t, setupOpts{config: func(c *api.Config) {
		c.Endpoints = map[string][]string{"llama": {"/v1/chat/completions", "/v1/completions"}}
	}})
}

func TestSubmit_EndpointJob(t *testing.T) {
	t.Parallel()
	b := endpointSetup(t)
	body := `{"model":"llama","endpoint":"/v1/chat/completions","priority":3,` +
		`"body":{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":4}}`
	rec := b.do(t, http.MethodPost, "/jobs", body)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	j, err := b.store.Get(out.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var stored map[string]any
	if err := json.Unmarshal(j.Body, &stored); err != nil {
		t.Fatalf("stored body %q: %v", j.Body, err)
	}
	if j.State != store.JobStateQueued || j.Endpoint != "/v1/chat/completions" || j.Type != "llm" || j.Prompt != "" ||
		j.Priority != 3 || stored["max_tokens"] != float64(4) {
		t.Fatalf("stored %+v", j)
	}
	if got := b.do(t, http.MethodGet, "/jobs/"+out.JobID, ""); !strings.Contains(got.Body.String(), `"endpoint":"/v1/chat/completions"`) {
		t.Fatalf("GET /jobs/{id}: %s", got.Body)
	}
}

func TestSubmit_EndpointJobRejected(t *testing.T) {
	t.Parallel()
	b := endpointSetup(t)
	tests := []struct{ name, body, msg string }{
		{"NotServed", `{"model":"llama","endpoint":"/v1/embeddings","body":{"input":"x"}}`,
			`model \"llama\" does not serve \"/v1/embeddings\"; it serves /v1/chat/completions, /v1/completions`},
		{"EngineServesNone", `{"model":"sd","endpoint":"/v1/images/generations","body":{"prompt":"x"}}`,
			"its engine takes prompt jobs only"},
		{"NoEndpoint", `{"model":"llama","body":{"prompt":"x"}}`, "endpoint: required"},
		{"NoBody", `{"model":"llama","endpoint":"/v1/completions"}`, "body: required"},
		{"BodyNotObject", `{"model":"llama","endpoint":"/v1/completions","body":[1]}`, "body: required, a JSON object"},
		{"WithPrompt", `{"model":"llama","endpoint":"/v1/completions","prompt":"x","body":{}}`, "not allowed with endpoint"},
		{"Stream", `{"model":"llama","endpoint":"/v1/completions","body":{"prompt":"x","stream":true}}`, "body.stream"},
		{"Priority", `{"model":"llama","endpoint":"/v1/completions","body":{},"priority":101}`, "priority: must be between"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := b.do(t, http.MethodPost, "/jobs", tt.body)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tt.msg) {
				t.Fatalf("status %d body %s, want 400 with %q", rec.Code, rec.Body, tt.msg)
			}
		})
	}
	if jobs, _ := b.store.List(store.ListFilter{}); len(jobs) != 0 {
		t.Fatalf("%d jobs queued by rejected submissions", len(jobs))
	}
}
