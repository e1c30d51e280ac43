package sdcpp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/engine"
)

func TestParseParams(t *testing.T) {
	t.Parallel()
	valid := []string{
		``, `null`, `{}`,
		`{"width":64,"height":4096,"steps":1,"cfg_scale":0,"seed":-1,"count":1}`,
		`{"width":512,"height":768,"steps":150,"cfg_scale":30,"seed":9223372036854775807,"count":8}`,
		`{"negative_prompt":"blurry","sampling_method":"dpm++2m","scheduler":"karras"}`,
		`{"sampling_method":"lms","scheduler":"normal"}`, // normal: an alias of discrete
	}
	for _, raw := range valid {
		if _, err := ParseParams(json.RawMessage(raw)); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	invalid := []struct{ raw, field string }{
		{`{"width":513}`, "params.width"},
		{`{"width":56}`, "params.width"},
		{`{"height":4104}`, "params.height"},
		{`{"width":"512"}`, "params.width"},
		{`{"steps":0}`, "params.steps"},
		{`{"steps":151}`, "params.steps"},
		{`{"steps":2.5}`, "params.steps"},
		{`{"cfg_scale":-0.5}`, "params.cfg_scale"},
		{`{"cfg_scale":31}`, "params.cfg_scale"},
		{`{"seed":-2}`, "params.seed"},
		{`{"seed":9223372036854775808}`, "params.seed"},
		{`{"count":0}`, "params.count"},
		{`{"count":9}`, "params.count"},
		{`{"negative_prompt":"` + strings.Repeat("x", MaxNegativePrompt+1) + `"}`, "params.negative_prompt"},
		{`{"sampling_method":"euler a"}`, "params.sampling_method"},
		{`{"sampling_method":"-o"}`, "params.sampling_method"},
		{`{"scheduler":"` + strings.Repeat("k", 33) + `"}`, "params.scheduler"},
		// Names are checked against stable-diffusion.cpp's lists: sd-server
		// would silently ignore these, sd-cli would exit 1.
		{`{"sampling_method":"euler_x"}`, "params.sampling_method"},
		{`{"scheduler":"bogus"}`, "params.scheduler"},
		{`{"max_tokens":5}`, "params.max_tokens"},
		{`[]`, "params"},
		{`{"width":512}{}`, "params"},
	}
	for _, tt := range invalid {
		_, err := ParseParams(json.RawMessage(tt.raw))
		var fe *engine.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%.60s: err %v, want field %s", tt.raw, err, tt.field)
		}
	}
}

func TestParams_Resolve(t *testing.T) {
	t.Parallel()
	d := Defaults{Width: 512, Height: 512, Steps: 20, CFGScale: 7, SamplingMethod: "euler_a"}
	seed := func() int64 { return 1234 }

	r := Params{}.Resolve("a cat", d, seed)
	want := Request{Prompt: "a cat", Width: 512, Height: 512, Steps: 20, CFGScale: 7, Seed: 1234, Count: 1, SamplingMethod: "euler_a"}
	if r != want {
		t.Fatalf("defaults: %+v", r)
	}

	w, h, steps, count := 768, 256, 4, 3
	cfg, s := 0.0, int64(0)
	p := Params{Width: &w, Height: &h, Steps: &steps, CFGScale: &cfg, Seed: &s, Count: &count,
		NegativePrompt: "dog", SamplingMethod: "lcm", Scheduler: "karras"}
	r = p.Resolve("x", d, seed)
	want = Request{Prompt: "x", NegativePrompt: "dog", Width: 768, Height: 256, Steps: 4, CFGScale: 0, Seed: 0,
		Count: 3, SamplingMethod: "lcm", Scheduler: "karras"}
	if r != want {
		t.Fatalf("set: %+v", r)
	}

	random := int64(-1)
	if r := (Params{Seed: &random}).Resolve("x", d, seed); r.Seed != 1234 {
		t.Fatalf("seed -1 gave %d", r.Seed)
	}
	if r := (Params{}).Resolve("x", d, nil); r.Seed < 0 {
		t.Fatalf("random seed %d", r.Seed)
	}
}
