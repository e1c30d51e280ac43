package sdcpp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vramcram/vramcram/runner"
)

// Files are the model files of a stable-diffusion.cpp model. Each non-empty
// one becomes a flag; a full checkpoint needs only Model, split models
// (Flux, SD3.5, Z-Image, …) name their parts.
type Files struct {
	Model          string // -m: a full checkpoint
	DiffusionModel string // --diffusion-model: a standalone diffusion model
	VAE            string // --vae
	ClipL          string // --clip_l
	ClipG          string // --clip_g
	T5XXL          string // --t5xxl
	LLM            string // --llm: an LLM text encoder
}

// File is one model file with its flag.
type File struct {
	Flag string
	Path string
}

// List returns the configured files with their flags, in argv order.
func (f Files) List() []File {
	all := []File{
		{"-m", f.Model}, {"--diffusion-model", f.DiffusionModel}, {"--vae", f.VAE},
		{"--clip_l", f.ClipL}, {"--clip_g", f.ClipG}, {"--t5xxl", f.T5XXL}, {"--llm", f.LLM},
	}
	out := all[:0]
	for _, x := range all {
		if x.Path != "" {
			out = append(out, x)
		}
	}
	return out
}

// Args returns the model flags.
func (f Files) Args() []string {
	var args []string
	for _, x := range f.List() {
		args = append(args, x.Flag, x.Path)
	}
	return args
}

// ImageRequest is one text-to-image generation with every value decided.
// Empty SamplingMethod and Scheduler leave the engine's defaults.
type ImageRequest struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Steps          int
	CFGScale       float64
	Seed           int64
	Count          int // images (sd's batch count)
	SamplingMethod string
	Scheduler      string
	// PromptFile and NegativePromptFile, when set, name files holding the
	// prompts, passed as --prompt-file and --negative-prompt-file instead
	// of -p and -n (Linux limits one argv word to 128 KiB: a long prompt,
	// non-ASCII above all, would fail with E2BIG). See PromptFiles.
	PromptFile         string
	NegativePromptFile string
}

// promptFileOver is the prompt length, in bytes, above which sd-cli gets
// the prompt in a file rather than in argv.
const promptFileOver = 4 << 10

// PromptFiles writes req's prompts that are longer than a few KiB to files
// in dir and returns req naming them, and a function removing them.
func PromptFiles(dir string, req ImageRequest) (ImageRequest, func(), error) {
	var paths []string
	cleanup := func() {
		for _, p := range paths {
			_ = os.Remove(p)
		}
	}
	for _, x := range []struct {
		text *string
		file *string
		name string
	}{{&req.Prompt, &req.PromptFile, ".prompt.txt"}, {&req.NegativePrompt, &req.NegativePromptFile, ".negative-prompt.txt"}} {
		if len(*x.text) <= promptFileOver {
			continue
		}
		path := filepath.Join(dir, x.name)
		if err := os.WriteFile(path, []byte(*x.text), 0o600); err != nil {
			cleanup()
			return req, func() {}, fmt.Errorf("write prompt file: %w", err)
		}
		paths = append(paths, path)
		*x.file = path
	}
	return req, cleanup, nil
}

// CLIArgs returns sd-cli's argv (after the binary) for one generation that
// writes to output:
//
//	MODEL FLAGS (-p PROMPT | --prompt-file F) [-n NEG | --negative-prompt-file F] -o OUTPUT -W w -H h --steps s --cfg-scale c -s SEED -b N
//	[--sampling-method m] [--scheduler s] extra...
//
// Extra comes last so a per-model setting can override ours (sd-cli keeps
// the last value of a repeated flag). --sampling-method and --scheduler are
// left out when empty: older releases call the latter --schedule.
func CLIArgs(files Files, req ImageRequest, output string, extra []string) []string {
	args := files.Args()
	if req.PromptFile != "" {
		args = append(args, "--prompt-file", req.PromptFile)
	} else {
		args = append(args, "-p", req.Prompt)
	}
	switch {
	case req.NegativePromptFile != "":
		args = append(args, "--negative-prompt-file", req.NegativePromptFile)
	case req.NegativePrompt != "":
		args = append(args, "-n", req.NegativePrompt)
	}
	args = append(args,
		"-o", output,
		"-W", strconv.Itoa(req.Width), "-H", strconv.Itoa(req.Height),
		"--steps", strconv.Itoa(req.Steps),
		"--cfg-scale", strconv.FormatFloat(req.CFGScale, 'f', -1, 64),
		"-s", strconv.FormatInt(req.Seed, 10),
		"-b", strconv.Itoa(max(req.Count, 1)),
	)
	if req.SamplingMethod != "" {
		args = append(args, "--sampling-method", req.SamplingMethod)
	}
	if req.Scheduler != "" {
		args = append(args, "--scheduler", req.Scheduler)
	}
	return append(args, extra...)
}

// CLIRun is one run of sd-cli. Binary and Args are required.
type CLIRun struct {
	// Runner is the template of the process (its Logger and LogLines
	// count); the fields below override it.
	Runner runner.Config
	Name   string   // model name, for logs and errors
	Binary string   // path, or a name looked up in PATH
	Args   []string // argv after the binary
	Env    []string // extra KEY=VALUE appended to os.Environ()
	Logger *slog.Logger
	// ProgressFunc, if set, gets every progress bar update the engine
	// prints ("|=====>   | 3/20 - 1.52it/s"): sampling steps, but also VAE
	// tiles and the like; the caller picks. Called from one goroutine.
	ProgressFunc func(step, steps int)
	// SpawnedFunc, if set, is called once the child runs; exited is closed
	// once it has been reaped. Use it for pid records and to learn the PID.
	// It must not block.
	SpawnedFunc func(pid int, exited <-chan struct{})
}

// RunCLI runs sd-cli to its end through runner.Run (own process group,
// group killed when ctx ends or the leader exits). Progress bars are read
// off its output (a carriage return ends a line) and kept out of the error's
// tail, as are blank lines.
//
// Returns nil on exit code 0; ctx's cause (wrapped) when ctx ended first;
// *CLIError when it failed; an error wrapping runner.ErrBinaryNotFound when
// the binary is missing.
func RunCLI(ctx context.Context, r CLIRun) error {
	cfg := r.Runner
	cfg.Name, cfg.Binary = r.Name, r.Binary
	args := r.Args
	cfg.ArgsFunc = func(int) []string { return args }
	cfg.Env = append(append([]string(nil), cfg.Env...), r.Env...)
	if r.Logger != nil {
		cfg.Logger = r.Logger
	}
	cfg.SpawnedFunc = r.SpawnedFunc
	cfg.TermOutput = true
	var marked []string // read by the line reader until runner.Run returns
	cfg.LineFunc = func(line string) bool {
		if step, steps, ok := ParseProgress(line); ok {
			if r.ProgressFunc != nil {
				r.ProgressFunc(step, steps)
			}
			return false
		}
		if isSDErrorLine(line) && len(marked) < maxMarkedLines {
			marked = append(marked, line)
		}
		return strings.TrimSpace(line) != ""
	}
	err := runner.Run(ctx, cfg)
	var ee *runner.ExitError
	if errors.As(err, &ee) {
		return &CLIError{ExitError: ee, Marked: marked}
	}
	return err
}

// sigAbort is how the runner names SIGABRT in ExitError.Signal.
var sigAbort = syscall.SIGABRT.String()

// maxMarkedLines bounds the failure lines a run keeps apart from its tail.
const maxMarkedLines = 32

// CLIError reports an sd-cli run that exited with a failure: the runner's
// ExitError (Tail holds the last output lines, progress bars left out),
// summarised by the lines that say what went wrong.
type CLIError struct {
	*runner.ExitError
	// Marked are the run's failure lines ([ERROR] lines and the markers of
	// bad input), the first maxMarkedLines of them, kept apart from Tail:
	// after an argument error sd-cli prints its usage, some 250 lines,
	// which push the error line out of any tail of the last lines.
	Marked []string
}

func (e *CLIError) Error() string {
	short := *e.ExitError
	short.Tail = e.errorLines()
	return short.Error()
}

// Unwrap returns the runner's ExitError.
func (e *CLIError) Unwrap() error { return e.ExitError }

// errorLines prefers the lines that say what went wrong: sd-cli prints its
// usage (tens of lines) after an argument error, and warnings such as
// "file … not found" come before the final "new_sd_ctx_t failed".
func (e *CLIError) errorLines() []string {
	if len(e.Marked) > 0 {
		return e.Marked
	}
	var keep []string
	for _, l := range e.Tail {
		if isSDErrorLine(l) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return e.Tail
	}
	return keep
}

// sdBadInputMarkers are sd-cli's lines for input that no retry can fix: a
// missing or unreadable model file, an unknown argument or value.
var sdBadInputMarkers = []string{
	"unknown format",                     // "unknown format X": not a model file
	"get sd version from file failed",    // a file that is no diffusion model
	"init model loader from file failed", // unreadable model
	"error: ",                            // argument errors: "error: invalid sample method x"
}

// sdMissingFile is model_loader.cpp's "file X not found" and nothing else:
// a Flux-style load prints "clip_l text encoder not found!" as a mere
// warning, which must not make a later transient failure permanent.
var sdMissingFile = regexp.MustCompile(`\bfile .+ not found$`)

// sdNumberException is the C++ runtime's report of an argument whose value
// is no number, or one out of range: sd-cli reads numeric flags with
// std::stoi, std::stof and std::stoll, catches nothing and aborts (SIGABRT)
// before any error line of its own. The second line names the function.
var sdNumberException = regexp.MustCompile(`^terminate called after throwing an instance of 'std::(invalid_argument|out_of_range)'$|^what\(\):\s+sto(i|f|ll)$`)

func isBadInputLine(l string) bool {
	if t := strings.TrimSpace(l); sdMissingFile.MatchString(t) || sdNumberException.MatchString(t) {
		return true
	}
	for _, m := range sdBadInputMarkers {
		if strings.Contains(l, m) {
			return true
		}
	}
	return false
}

func isSDErrorLine(l string) bool {
	return strings.Contains(l, "[ERROR]") || strings.Contains(l, "new_sd_ctx_t failed") || isBadInputLine(l)
}

// BadInput reports whether the output says the input was wrong (model file,
// arguments) rather than the run failing (crash, out of memory): running the
// same job again cannot help. Only exit code 1 counts, which is what sd-cli
// returns for such input, and an abort (SIGABRT) with the C++ runtime's line
// for a numeric argument that is none. The failure lines kept apart
// (Marked) count, and the tail's, for an error built without them.
func (e *CLIError) BadInput() bool {
	lines := append(append([]string(nil), e.Marked...), e.Tail...)
	switch {
	case e.Code == 1:
		return slices.ContainsFunc(lines, isBadInputLine)
	case e.Signal == sigAbort: // not any marker: a failed GGML_ASSERT aborts too
		return slices.ContainsFunc(lines, func(l string) bool { return sdNumberException.MatchString(strings.TrimSpace(l)) })
	}
	return false
}

// sdProgress matches stable-diffusion.cpp's progress bar, printed as
// "\r  |=====>    | 3/20 - 1.52it/s\033[K" (s/it when slower than one step
// a second). Model loading prints a bar of '#' in MB/s, which does not match.
var sdProgress = regexp.MustCompile(`\|[ =>]*\|\s*(\d+)/(\d+)\s*-\s*[0-9.]+(?:s/it|it/s)`)

// ParseProgress extracts step and steps from one progress bar update.
func ParseProgress(line string) (step, steps int, ok bool) {
	m := sdProgress.FindStringSubmatch(line)
	if m == nil {
		return 0, 0, false
	}
	step, err1 := strconv.Atoi(m[1])
	steps, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil || steps <= 0 || step < 0 || step > steps {
		return 0, 0, false
	}
	return step, steps, true
}
