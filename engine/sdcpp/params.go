package sdcpp

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"unicode/utf8"

	"github.com/vramcram/vramcram/engine"
)

// Params are the parameters of a diffusion job, as submitted. Nil
// and empty values take the model's defaults (Defaults).
type Params struct {
	Width          *int     `json:"width,omitempty"`
	Height         *int     `json:"height,omitempty"`
	Steps          *int     `json:"steps,omitempty"`
	CFGScale       *float64 `json:"cfg_scale,omitempty"`
	Seed           *int64   `json:"seed,omitempty"`  // -1: random
	Count          *int     `json:"count,omitempty"` // images
	NegativePrompt string   `json:"negative_prompt,omitempty"`
	SamplingMethod string   `json:"sampling_method,omitempty"`
	Scheduler      string   `json:"scheduler,omitempty"`
}

// Limits on diffusion parameters. Image sides are multiples of 8 because
// the latent space is 8 times smaller than the image.
const (
	MinImageSide      = 64
	MaxImageSide      = 4096
	MaxDiffusionSteps = 150
	MaxCFGScale       = 30
	MaxImageCount     = 8
	// MaxNegativePrompt is the longest negative prompt, in characters.
	MaxNegativePrompt = 10000
)

// ParseParams decodes and validates raw (a JSON object, or empty).
// Errors are *engine.FieldError naming the field, e.g. "params.width".
func ParseParams(raw json.RawMessage) (Params, error) {
	var p Params
	if engine.EmptyParams(raw) {
		return p, nil
	}
	if err := engine.DecodeParams(raw, &p); err != nil {
		return p, err
	}
	return p, p.Validate()
}

// Validate checks every set value; the error is a *engine.FieldError naming the
// first wrong field as "params.NAME".
func (p Params) Validate() error {
	for _, side := range []struct {
		name string
		v    *int
	}{{"params.width", p.Width}, {"params.height", p.Height}} {
		if side.v != nil && (*side.v < MinImageSide || *side.v > MaxImageSide || *side.v%8 != 0) {
			return &engine.FieldError{Field: side.name, Msg: fmt.Sprintf("must be a multiple of 8 between %d and %d", MinImageSide, MaxImageSide)}
		}
	}
	switch {
	case p.Steps != nil && (*p.Steps < 1 || *p.Steps > MaxDiffusionSteps):
		return &engine.FieldError{Field: "params.steps", Msg: fmt.Sprintf("must be between 1 and %d", MaxDiffusionSteps)}
	case p.CFGScale != nil && !(*p.CFGScale >= 0 && *p.CFGScale <= MaxCFGScale):
		return &engine.FieldError{Field: "params.cfg_scale", Msg: fmt.Sprintf("must be between 0 and %d", MaxCFGScale)}
	case p.Seed != nil && *p.Seed < -1:
		return &engine.FieldError{Field: "params.seed", Msg: "must be -1 (random) or between 0 and 9223372036854775807"}
	case p.Count != nil && (*p.Count < 1 || *p.Count > MaxImageCount):
		return &engine.FieldError{Field: "params.count", Msg: fmt.Sprintf("must be between 1 and %d", MaxImageCount)}
	case utf8.RuneCountInString(p.NegativePrompt) > MaxNegativePrompt:
		return &engine.FieldError{Field: "params.negative_prompt", Msg: fmt.Sprintf("at most %d characters", MaxNegativePrompt)}
	}
	if p.SamplingMethod != "" && !KnownSampleMethod(p.SamplingMethod) {
		return &engine.FieldError{Field: "params.sampling_method", Msg: fmt.Sprintf("unknown sampling method %.32q; one of %s", p.SamplingMethod, nameList(SampleMethods))}
	}
	if p.Scheduler != "" && !KnownScheduler(p.Scheduler) {
		return &engine.FieldError{Field: "params.scheduler", Msg: fmt.Sprintf("unknown scheduler %.32q; one of %s", p.Scheduler, nameList(append(Schedulers, schedulerAliases...)))}
	}
	return nil
}

// Defaults are a model's values for parameters a job leaves out.
type Defaults struct {
	Width, Height  int
	Steps          int
	CFGScale       float64
	SamplingMethod string
	Scheduler      string
}

// Request is a job's generation with every value decided.
type Request struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Steps          int
	CFGScale       float64
	Seed           int64
	Count          int
	SamplingMethod string
	Scheduler      string
}

// Resolve fills what p leaves out from d and picks a seed when none (or -1)
// was given, with seed, or a random one in [0, 2^31) when seed is nil.
func (p Params) Resolve(prompt string, d Defaults, seed func() int64) Request {
	r := Request{
		Prompt: prompt, NegativePrompt: p.NegativePrompt,
		Width: d.Width, Height: d.Height, Steps: d.Steps, CFGScale: d.CFGScale, Count: 1,
		SamplingMethod: d.SamplingMethod, Scheduler: d.Scheduler,
	}
	setInt(&r.Width, p.Width)
	setInt(&r.Height, p.Height)
	setInt(&r.Steps, p.Steps)
	setInt(&r.Count, p.Count)
	if p.CFGScale != nil {
		r.CFGScale = *p.CFGScale
	}
	if p.SamplingMethod != "" {
		r.SamplingMethod = p.SamplingMethod
	}
	if p.Scheduler != "" {
		r.Scheduler = p.Scheduler
	}
	switch {
	case p.Seed != nil && *p.Seed >= 0:
		r.Seed = *p.Seed
	case seed != nil:
		r.Seed = seed()
	default:
		r.Seed = rand.Int64N(math.MaxInt32)
	}
	return r
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}
