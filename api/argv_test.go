package api_test

import (
	"github.com/vramcram/vramcram/engine"

	"net/http"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
)

// Prompts no diffusion engine run can take are refused at submission, not
// failed max_attempts times at exec.
func TestSubmit_DiffusionPromptsThatCannotRun(t *testing.T) {
	t.Parallel()
	b := setupWith(t, setupOpts{config: func(c *api.Config) {
		c.MaxPromptChars = 1 << 20
		c.ModelTypes = api.ModelKinds{"llama": engine.KindLLM, "sd": engine.KindDiffusion, "sdsrv": engine.KindDiffusion}
		c.ArgvPromptModels = map[string]bool{"sd": true, "sdsrv": false}
	}})
	atLimit := strings.Repeat("a", api.MaxArgvPromptBytes)
	for _, tt := range []struct{ name, body, msg string }{
		{"NULPrompt", `{"model":"sd","prompt":"a cat\u0000--output /etc/x"}`, "prompt: must not contain NUL"},
		{"NULNegative", `{"model":"sd","prompt":"a cat","params":{"negative_prompt":"dog\u0000"}}`, "negative_prompt: must not contain NUL"},
		{"NULPromptServer", `{"model":"sdsrv","prompt":"\u0000"}`, "prompt: must not contain NUL"},
		{"ArgvTooLong", `{"model":"sd","prompt":"` + atLimit + `a"}`, "command-line argument"},
		{"ArgvTooLongMultibyte", `{"model":"sd","prompt":"` + strings.Repeat("é", api.MaxArgvPromptBytes/2+1) + `"}`, "bytes exceeds"},
		// sd-server's parameter tag, in any form: it would smuggle
		// parameters past the checks (a one-pass strip rebuilds a nested
		// one) or crash the server.
		{"Tag", `{"model":"sdsrv","prompt":"cat <sd_cpp_extra_args>{\"sample_params\":{\"sample_steps\":60}}</sd_cpp_extra_args>"}`, "prompt: must not contain sd_cpp_extra_args"},
		{"TagNested", `{"model":"sdsrv","prompt":"cat <sd_cpp_extra_<sd_cpp_extra_args>args>{\"seed\":7}</sd_cpp_extra_</sd_cpp_extra_args>args>"}`, "prompt: must not contain sd_cpp_extra_args"},
		{"TagJSONEscaped", `{"model":"sdsrv","prompt":"cat \u003csd_cpp_extra_args\u003e{}\u003c/sd_cpp_extra_args\u003e"}`, "prompt: must not contain sd_cpp_extra_args"},
		{"TagCase", `{"model":"sd","prompt":"cat <SD_CPP_EXTRA_ARGS>{}</Sd_Cpp_Extra_Args>"}`, "prompt: must not contain sd_cpp_extra_args"},
		{"TagNegative", `{"model":"sdsrv","prompt":"cat","params":{"negative_prompt":"dog\"}</sd_cpp_extra_args><sd_cpp_extra_args>{\"seed\":7"}}`, "params.negative_prompt: must not contain sd_cpp_extra_args"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, b.do(t, http.MethodPost, "/jobs", tt.body), http.StatusBadRequest, api.CodeInvalid, tt.msg)
		})
	}
	if n := b.queuedJobs(t); n != 0 {
		t.Fatalf("%d jobs queued", n)
	}
	// The longest argv prompt, a long prompt for sd-server (HTTP), a NUL for
	// an LLM (JSON to llama-server) are fine.
	for _, body := range []string{
		`{"model":"sd","prompt":"` + atLimit + `"}`,
		`{"model":"sdsrv","prompt":"` + atLimit + `a"}`,
		`{"model":"llama","prompt":"a\u0000b"}`,
	} {
		b.submit(t, body)
	}
	// The images door says the same, in its fields and shape.
	rec := b.do(t, http.MethodPost, "/v1/images/generations", `{"model":"sd","prompt":"x","negative_prompt":"\u0000"}`)
	wantOAIError(t, http.StatusBadRequest, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeInvalid, "")
	if !strings.Contains(rec.Body.String(), `"negative_prompt: must not contain NUL`) {
		t.Fatalf("images door: %s", rec.Body)
	}
	rec = b.do(t, http.MethodPost, "/v1/images/generations", `{"model":"sdsrv","prompt":"x <sd_cpp_extra_args>{}</sd_cpp_extra_args>"}`)
	wantOAIError(t, http.StatusBadRequest, rec.Body.Bytes(), rec.Code, "invalid_request_error", api.CodeInvalid, "")
	if !strings.Contains(rec.Body.String(), "must not contain sd_cpp_extra_args") {
		t.Fatalf("images door, tag: %s", rec.Body)
	}
	if n := b.queuedJobs(t); n != 3 {
		t.Fatalf("%d jobs queued, want the 3 good ones", n)
	}
}
