package sdcpp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/runner"
)

// ServerReadyPath is sd-server's readiness (and heartbeat) probe. It has
// no /health; it loads the model before it listens, so any answer means
// ready, and /v1/models answers without waiting for a running generation.
const ServerReadyPath = "/v1/models"

// ServerMaxSteps is the most sampling steps sd-server runs: its routes
// validate "strictly" and clamp sample_steps to [1, 100] (and n to [1, 8])
// without a word (examples/common/common.cpp, resolve in strict mode).
const ServerMaxSteps = 100

// ServerOptions are the sd-server settings VramCram decides per model.
// The generation defaults apply to requests that do not set a value; every
// request VramCram sends sets them all, so they matter only to other clients.
type ServerOptions struct {
	Files          Files
	Width, Height  int     // -W, -H; 0 leaves them out
	Steps          int     // --steps; 0 leaves it out
	CFGScale       float64 // --cfg-scale; 0 leaves it out
	SamplingMethod string  // --sampling-method; "" leaves it out
	Scheduler      string  // --scheduler; "" leaves it out
	Extra          []string
}

// ServerArgs returns a runner ArgsFunc for sd-server:
//
//	MODEL FLAGS --listen-ip 127.0.0.1 --listen-port P [-W w -H h --steps s --cfg-scale c
//	--sampling-method m --scheduler s] extra...
func ServerArgs(o ServerOptions) func(port int) []string {
	extra := append([]string(nil), o.Extra...)
	return func(port int) []string {
		args := o.Files.Args()
		args = append(args, "--listen-ip", "127.0.0.1", "--listen-port", strconv.Itoa(port))
		if o.Width > 0 && o.Height > 0 {
			args = append(args, "-W", strconv.Itoa(o.Width), "-H", strconv.Itoa(o.Height))
		}
		if o.Steps > 0 {
			args = append(args, "--steps", strconv.Itoa(o.Steps))
		}
		if o.CFGScale > 0 {
			args = append(args, "--cfg-scale", strconv.FormatFloat(o.CFGScale, 'f', -1, 64))
		}
		if o.SamplingMethod != "" {
			args = append(args, "--sampling-method", o.SamplingMethod)
		}
		if o.Scheduler != "" {
			args = append(args, "--scheduler", o.Scheduler)
		}
		return append(args, extra...)
	}
}

// sdExtraArgsTag wraps the native parameters that sd-server's OpenAI route
// reads from inside the prompt.
const sdExtraArgsTag = "sd_cpp_extra_args"

// sdExtraArgs is the part of sd-server's native request schema that the
// OpenAI route has no field for.
type sdExtraArgs struct {
	NegativePrompt string         `json:"negative_prompt,omitempty"`
	Seed           int64          `json:"seed"`
	SampleParams   sdSampleParams `json:"sample_params"`
}

type sdSampleParams struct {
	SampleSteps  int        `json:"sample_steps"`
	SampleMethod string     `json:"sample_method,omitempty"`
	Scheduler    string     `json:"scheduler,omitempty"`
	Guidance     sdGuidance `json:"guidance"`
}

type sdGuidance struct {
	TxtCFG float64 `json:"txt_cfg"`
}

// imagesBody is the JSON of POST /v1/images/generations.
type imagesBody struct {
	Prompt         string `json:"prompt"`
	N              int    `json:"n"`
	Size           string `json:"size"`
	OutputFormat   string `json:"output_format"`
	ResponseFormat string `json:"response_format"`
}

// imagesAnswer is its answer; errors come as {"error":"…"} or
// {"error":"server_error","message":"…"}.
type imagesAnswer struct {
	Data []struct {
		B64JSON string `json:"b64_json"`
	} `json:"data"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// maxErrorMessage caps the text of an error answer kept in a job's error.
const maxErrorMessage = 64 << 10

// MaxExtraArgsBytes caps the text VramCram puts inside sd-server's
// <sd_cpp_extra_args> tag. sd-server extracts it with a std::regex whose
// recursion overflows the stack at about 50 KB and kills the server; the
// negative prompt is most of it.
const MaxExtraArgsBytes = 32 << 10

// HasExtraArgsTag reports whether s names sd-server's <sd_cpp_extra_args>
// tag in any letter case. sd-server reads native parameters from inside
// that tag in the prompt, and its parser crashes on a long one, so text
// that names it is refused outright, not stripped: stripping once lets a
// nested tag rebuild itself.
func HasExtraArgsTag(s string) bool {
	return strings.Contains(strings.ToLower(s), sdExtraArgsTag)
}

// ServerPrompt returns the prompt sent to sd-server's OpenAI route: the user's
// text, then the native parameters the route has no field for, as JSON
// without HTML escapes ("<" stays one byte, not six), inside the tag. A
// prompt or negative prompt that names the tag (HasExtraArgsTag) is a
// *engine.FieldError, as is a tag text over MaxExtraArgsBytes (for
// params.negative_prompt).
func ServerPrompt(req ImageRequest) (string, error) {
	for _, f := range []struct{ name, v string }{{"prompt", req.Prompt}, {"params.negative_prompt", req.NegativePrompt}} {
		if HasExtraArgsTag(f.v) {
			return "", &engine.FieldError{Field: f.name, Msg: "must not contain " + sdExtraArgsTag + " (sd-server's parameter tag)"}
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(sdExtraArgs{
		NegativePrompt: req.NegativePrompt,
		Seed:           req.Seed,
		SampleParams: sdSampleParams{
			SampleSteps: req.Steps, SampleMethod: req.SamplingMethod, Scheduler: req.Scheduler,
			Guidance: sdGuidance{TxtCFG: req.CFGScale},
		},
	})
	if err != nil {
		return "", err
	}
	extra := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(extra) > MaxExtraArgsBytes {
		return "", &engine.FieldError{Field: "params.negative_prompt", Msg: fmt.Sprintf(
			"%d bytes once encoded for sd-server, which takes at most %d (a longer <%s> crashes it)", len(extra), MaxExtraArgsBytes, sdExtraArgsTag)}
	}
	return req.Prompt + " <" + sdExtraArgsTag + ">" + string(extra) + "</" + sdExtraArgsTag + ">", nil
}

// GenerateImages asks p, an sd-server, for req's images through its OpenAI
// route (POST /v1/images/generations, b64_json) and returns the PNG bytes
// of each. sd-server generates one request at a time and cannot stop one:
// cancelling ctx abandons the answer, but the engine finishes the images.
//
// Errors: ctx's error when ctx ended; *runner.HTTPError for a non-200 answer (4xx:
// the server refused the parameters); an error wrapping Err() when the
// engine died during the request.
func GenerateImages(ctx context.Context, p *runner.Process, req ImageRequest) ([][]byte, error) {
	prompt, err := ServerPrompt(req)
	if err != nil {
		return nil, fmt.Errorf("generate on engine %s: %w", p.Name(), err)
	}
	body, err := json.Marshal(imagesBody{
		Prompt: prompt, N: max(req.Count, 1), Size: fmt.Sprintf("%dx%d", req.Width, req.Height),
		OutputFormat: "png", ResponseFormat: "b64_json",
	})
	if err != nil {
		return nil, fmt.Errorf("generate on engine %s: %w", p.Name(), err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL()+"/v1/images/generations", strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("generate on engine %s: %w", p.Name(), err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := p.Client().Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("generate on engine %s: %w", p.Name(), p.RequestError(ctx, err))
	}
	defer resp.Body.Close()
	images, err := decodeImages(resp)
	if err != nil {
		var he *runner.HTTPError
		if !errors.As(err, &he) {
			err = p.RequestError(ctx, err)
		}
		return nil, fmt.Errorf("generate on engine %s: %w", p.Name(), err)
	}
	return images, nil
}

// maxImagesAnswer bounds the answer read into memory: 8 images of
// 4096×4096 RGB PNG, base64-encoded, stay below it.
const maxImagesAnswer = 1 << 30

func decodeImages(resp *http.Response) ([][]byte, error) {
	var a imagesAnswer
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxImagesAnswer))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	jerr := json.Unmarshal(raw, &a)
	if resp.StatusCode != http.StatusOK {
		e := &runner.HTTPError{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(raw[:min(len(raw), maxErrorMessage)]))}
		if jerr == nil && a.Error != "" {
			e.Message = a.Error
			if a.Message != "" {
				e.Type, e.Message = a.Error, a.Message
			}
		}
		return nil, e
	}
	if jerr != nil {
		return nil, fmt.Errorf("decode answer: %w", jerr)
	}
	if len(a.Data) == 0 {
		return nil, fmt.Errorf("answer holds no image")
	}
	out := make([][]byte, 0, len(a.Data))
	for i, d := range a.Data {
		b, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			return nil, fmt.Errorf("decode image %d: %w", i, err)
		}
		out = append(out, b)
	}
	return out, nil
}
