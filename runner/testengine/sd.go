package main

// The stand-in also plays stable-diffusion.cpp's two programs:
//
//   - sd-cli (also called "sd"): one process per generation. It checks the
//     model files, "loads", prints sampling progress as the real one does
//     ("\r  |=====>    | 3/20 - 1.52it/s\033[K", a newline after the last
//     step of each image) and writes PNG files to -o (for -b N > 1 the real
//     naming: out_0.png, out_1.png, …), then exits 0. Bad input exits 1
//     within milliseconds with the real messages ("file X not found",
//     "unknown format X", "get sd version from file failed",
//     "new_sd_ctx_t failed", "error: unknown argument: X"). An argument
//     error is one "[ERROR]" line on stderr followed, as in the real
//     program, by a usage text of some 250 lines on stdout. -p may be left
//     out (an empty prompt); --prompt-file and --negative-prompt-file read
//     them from files; -m may name a diffusers directory. Sampler and
//     scheduler names are checked against stable-diffusion.cpp's lists
//     ("normal" is an alias of discrete).
//   - sd-server: loads first, logs "listening on", then listens on
//     --listen-ip/--listen-port (default 127.0.0.1:1234); when the port is
//     taken it exits 0 without a word, as the real one does. A
//     <sd_cpp_extra_args> text of 50,000 bytes or more kills it with
//     SIGSEGV (the real std::regex overflows its stack). GET /v1/models, POST
//     /v1/images/generations (OpenAI shape, b64_json, native parameters in
//     <sd_cpp_extra_args>{…}</sd_cpp_extra_args> inside the prompt),
//     one generation at a time. It installs no SIGTERM handler, so SIGTERM
//     kills it at once.
//
// The role is chosen by the program's base name (sd, sd-cli, sd-server: a
// symlink or copy of the binary) or by --test-role sd-cli|sd-server.
//
// Images are RGB gradients whose colours are derived from the prompt, the
// negative prompt, the seed and the image's index, so the same request gives
// the same bytes.
//
// Test flags of these roles:
//
//	--test-load-delay D       time spent loading the model (default 0)
//	--test-step-delay D       time per sampling step (default 0)
//	--test-fail-load          the model file is "of an unknown format": exit 1
//	--test-crash-at-step N    exit 2 at the N-th sampling step of the process
//	--test-hang-at-step N     stop at the N-th sampling step and never go on
//	--test-ignore-sigterm     ignore SIGTERM and SIGINT
//	--test-fork-grandchild    start a sleeping copy in the same process group
//	--test-exit-after D       exit 3 after D, whatever it is doing

import (
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Roles of the stand-in besides llama-server.
const (
	roleSDCLI    = "sd-cli"
	roleSDServer = "sd-server"
)

// sdRole returns the stable-diffusion.cpp role asked for by the program
// name or --test-role, or "" for llama-server.
func sdRole(args []string) string {
	for i, a := range args[1:] {
		if v, ok := strings.CutPrefix(a, "--test-role="); ok {
			return v
		}
		if a == "--test-role" && i+2 < len(args) {
			return args[i+2]
		}
	}
	switch filepath.Base(args[0]) {
	case "sd", "sd-cli":
		return roleSDCLI
	case "sd-server":
		return roleSDServer
	}
	return ""
}

// runSD plays role with args (without the program name) and returns the
// exit code.
func runSD(role string, args []string) int {
	if len(args) > 0 && args[0] == "--version" { // only as the first argument
		fmt.Println(sdVersion)
		return 0
	}
	o, err := parseSDArgs(args)
	var exc *cppException
	if errors.As(err, &exc) {
		exc.abort()
	}
	if err == nil && !o.help {
		err = o.validate(role)
	}
	if err != nil {
		// The real programs: the error lines on stderr, then the whole usage
		// (some 250 lines) on stdout, exit 1.
		for _, line := range strings.Split(err.Error(), "\n") {
			sdLog("ERROR", "common.cpp", 325, "%s", line)
		}
		printUsage(role)
		return 1
	}
	if o.help {
		printUsage(role)
		return 0
	}
	if o.ignoreSigterm {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	}
	if o.forkGrandchild {
		if err := forkGrandchild(); err != nil {
			logf("test: fork grandchild: %v", err)
			return 1
		}
	}
	if o.exitAfter > 0 {
		time.AfterFunc(o.exitAfter, func() {
			logf("test: exiting with code 3 after %s (--test-exit-after)", o.exitAfter)
			os.Exit(3)
		})
	}
	switch role {
	case roleSDCLI:
		return runSDCLI(o)
	case roleSDServer:
		return runSDServer(o)
	}
	sdLog("ERROR", "main.cpp", 157, "error: invalid test role %s", role)
	return 1
}

// sdOptions are the parsed flags of both roles.
type sdOptions struct {
	files          [][2]string // flag, path: the model files in argv order
	prompt         string
	negative       string
	output         string
	width, height  int
	steps, batch   int
	cfg            float64
	seed           int64
	samplingMethod string
	scheduler      string
	listenIP       string
	listenPort     int
	help           bool // -h/--help: the usage on stdout, exit 0

	loadDelay, stepDelay    time.Duration
	exitAfter               time.Duration
	failLoad                bool
	crashAtStep, hangAtStep int
	ignoreSigterm           bool
	forkGrandchild          bool
}

// sdFileFlags are the model-file flags, by every spelling.
var sdFileFlags = map[string]string{
	"-m": "-m", "--model": "-m", "--diffusion-model": "--diffusion-model", "--vae": "--vae",
	"--clip_l": "--clip_l", "--clip_g": "--clip_g", "--t5xxl": "--t5xxl", "--llm": "--llm",
	"--taesd": "--taesd", "--control-net": "--control-net", "--upscale-model": "--upscale-model",
}

// sdValueFlags are other real flags that take a value; sdBoolFlags take
// none. Anything else is an unknown argument, as for the real programs.
var sdValueFlags = map[string]bool{
	"--type": true, "--rng": true, "--sampler-rng": true, "--prediction": true,
	"--lora-model-dir": true, "--embd-dir": true, "--vae-tile-size": true, "--backend": true, "--max-vram": true,
	"--lora-apply-mode": true, "--vae-format": true, "--serve-html-path": true, "--preview": true,
}

// sdIntFlags and sdFloatFlags take a number, read with std::stoi and
// std::stof: a value that is none aborts the program (see cppInt).
var (
	sdIntFlags   = map[string]bool{"-t": true, "--threads": true, "--clip-skip": true}
	sdFloatFlags = map[string]bool{"--guidance": true, "--eta": true, "--flow-shift": true, "--strength": true}
)

var sdBoolFlags = map[string]bool{
	"-v": true, "--verbose": true, "--color": true, "--fa": true, "--diffusion-fa": true, "--offload-to-cpu": true,
	"--vae-tiling": true, "--vae-on-cpu": true, "--clip-on-cpu": true, "--control-net-cpu": true, "--mmap": true,
	"--diffusion-conv-direct": true, "--vae-conv-direct": true, "--disable-image-metadata": true,
}

func parseSDArgs(args []string) (sdOptions, error) {
	o := sdOptions{output: "output.png", width: 512, height: 512, steps: 20, batch: 1, cfg: 7, seed: 42,
		listenIP: "127.0.0.1", listenPort: 1234}
	for i := 0; i < len(args); i++ {
		name := args[i]
		value := func() (string, error) {
			if i+1 >= len(args) {
				return "", errors.New(invalidParam(name))
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		if name == "-h" || name == "--help" {
			o.help = true // the real parser stops here
			return o, nil
		}
		if canon, ok := sdFileFlags[name]; ok {
			if v, err = value(); err == nil {
				o.files = append(o.files, [2]string{canon, v})
			}
		} else {
			err = o.setFlag(name, value)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

// setFlag applies one non-file flag; value reads its argument.
func (o *sdOptions) setFlag(name string, value func() (string, error)) error {
	str := func(dst *string) error {
		v, err := value()
		*dst = v
		return err
	}
	num := func(dst *int) error { // std::stoi
		v, err := value()
		if err != nil {
			return err
		}
		n, err := cppInt(v, 32, "stoi")
		*dst = int(n)
		return err
	}
	float := func(dst *float64) error { // std::stof
		v, err := value()
		if err != nil {
			return err
		}
		*dst, err = cppFloat(v)
		return err
	}
	dur := func(dst *time.Duration) error {
		v, err := value()
		if err == nil {
			*dst, err = time.ParseDuration(v)
		}
		return bad(name, err)
	}
	switch name {
	case "-p", "--prompt":
		return str(&o.prompt)
	case "-n", "--negative-prompt":
		return str(&o.negative)
	case "-o", "--output":
		return str(&o.output)
	case "-W", "--width":
		return num(&o.width)
	case "-H", "--height":
		return num(&o.height)
	case "--steps":
		return num(&o.steps)
	case "-b", "--batch-count":
		return num(&o.batch)
	case "--listen-port":
		return num(&o.listenPort)
	case "--listen-ip":
		return str(&o.listenIP)
	case "--cfg-scale":
		return float(&o.cfg)
	case "-s", "--seed":
		v, err := value()
		if err == nil {
			o.seed, err = cppInt(v, 64, "stoll")
		}
		return err
	case "--sampling-method":
		if err := str(&o.samplingMethod); err != nil {
			return err
		}
		if !slices.Contains(sdSampleMethods, o.samplingMethod) {
			return fmt.Errorf("error: invalid sample method %s\n%s", o.samplingMethod, invalidParam(name))
		}
		return nil
	case "--scheduler":
		if err := str(&o.scheduler); err != nil {
			return err
		}
		if o.scheduler != "normal" && !slices.Contains(sdSchedulers, o.scheduler) { // "normal" is discrete
			return fmt.Errorf("error: invalid scheduler %s\n%s", o.scheduler, invalidParam(name))
		}
		return nil
	case "--prompt-file":
		return readFileFlag(name, value, &o.prompt, "prompt")
	case "--negative-prompt-file":
		return readFileFlag(name, value, &o.negative, "negative prompt")
	case "--test-role":
		var role string
		return str(&role)
	case "--test-load-delay":
		return dur(&o.loadDelay)
	case "--test-step-delay":
		return dur(&o.stepDelay)
	case "--test-exit-after":
		return dur(&o.exitAfter)
	case "--test-crash-at-step":
		return num(&o.crashAtStep)
	case "--test-hang-at-step":
		return num(&o.hangAtStep)
	case "--test-fail-load":
		o.failLoad = true
	case "--test-ignore-sigterm":
		o.ignoreSigterm = true
	case "--test-fork-grandchild":
		o.forkGrandchild = true
	default:
		if strings.HasPrefix(name, "--test-role=") {
			return nil
		}
		var ignoredInt int
		var ignoredFloat float64
		var ignored string
		switch {
		case sdIntFlags[name]:
			return num(&ignoredInt)
		case sdFloatFlags[name]:
			return float(&ignoredFloat)
		case sdValueFlags[name]:
			return str(&ignored)
		}
		if !sdBoolFlags[name] {
			return fmt.Errorf("error: unknown argument: %s", name)
		}
	}
	return nil
}

func bad(name string, err error) error {
	if err == nil || strings.HasPrefix(err.Error(), "error: ") {
		return err
	}
	return errors.New(invalidParam(name))
}

// invalidParam is the parser's line for a flag whose value it refused;
// a refused name or file is reported first on a line of its own.
func invalidParam(name string) string { return "error: invalid parameter for argument: " + name }

// sdSampleMethods and sdSchedulers are stable-diffusion.cpp's names
// (sample_method_to_str and scheduler_to_str in src/stable-diffusion.cpp);
// str_to_scheduler also takes "normal" for discrete.
var (
	sdSampleMethods = []string{"euler", "euler_a", "heun", "dpm2", "dpm++2s_a", "dpm++2m", "dpm++2mv2", "ipndm",
		"ipndm_v", "lcm", "ddim_trailing", "tcd", "res_multistep", "res_2s", "er_sde", "euler_cfg_pp",
		"euler_a_cfg_pp", "euler_ge", "dpm++2m_sde", "dpm++2m_sde_bt", "lms"}
	sdSchedulers = []string{"discrete", "karras", "exponential", "ays", "gits", "sgm_uniform", "simple",
		"smoothstep", "kl_optimal", "lcm", "bong_tangent", "ltx2", "logit_normal", "flux2", "flux", "beta"}
)

// readFileFlag reads a --prompt-file or --negative-prompt-file argument.
func readFileFlag(name string, value func() (string, error), dst *string, what string) error {
	path, err := value()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("error: failed to read %s file '%s'\n%s", what, path, invalidParam(name))
	}
	*dst = string(b)
	return nil
}

// printUsage prints a usage text as long as the real one (its option
// lines), to stdout.
func printUsage(role string) {
	fmt.Println(sdVersion)
	fmt.Printf("Usage: %s [options]\n\nCLI Options:\n", role)
	for i := range usageLines {
		fmt.Printf("  --option-%03d <string>   stand-in usage line %d of the real program's option list\n", i, i)
	}
}

// usageLines is how many option lines the real sd-cli prints.
const usageLines = 250

// sdLog prints one line in stable-diffusion.cpp's log format:
// "[INFO ] file.cpp:123  - message". Errors go to stderr, the rest to stdout.
func sdLog(level, file string, line int, format string, args ...any) {
	var w io.Writer = os.Stdout
	if level == "ERROR" {
		w = os.Stderr
	}
	fmt.Fprintf(w, "[%-5s] %s:%-4d - %s\n", level, file, line, fmt.Sprintf(format, args...))
}

// errLoad is a model that did not load; the messages are printed already.
var errLoad = errors.New("load failed")

// stepsDone counts the sampling steps of this process, for the crash and
// hang flags. Only one generation runs at a time in either role.
var stepsDone int

// sample runs the sampling steps of one image, printing progress; it
// applies --test-crash-at-step and --test-hang-at-step.
func sample(o sdOptions, steps int) {
	start := time.Now()
	for step := 1; step <= steps; step++ {
		time.Sleep(o.stepDelay)
		stepsDone++
		if o.crashAtStep > 0 && stepsDone == o.crashAtStep {
			fmt.Print("\n")
			logf("test: simulated crash at sampling step %d (--test-crash-at-step)", stepsDone)
			os.Exit(2)
		}
		if o.hangAtStep > 0 && stepsDone == o.hangAtStep {
			fmt.Print("\n")
			logf("test: hanging at sampling step %d (--test-hang-at-step)", stepsDone)
			select {}
		}
		perStep := time.Since(start).Seconds() / float64(step)
		fmt.Print(progressLine(step, steps, perStep))
	}
	sdLog("INFO", "stable-diffusion.cpp", 2540, "sampling completed, taking %.2fs", time.Since(start).Seconds())
}

// progressLine draws the real progress bar: 50 columns, '>' at the head,
// "it/s" when a step takes less than a second, a newline after the last.
func progressLine(step, steps int, secsPerStep float64) string {
	const width = 50
	cur := step * width / steps
	var bar strings.Builder
	for i := range width {
		switch {
		case i > cur:
			bar.WriteByte(' ')
		case i == cur && i != width-1:
			bar.WriteByte('>')
		default:
			bar.WriteByte('=')
		}
	}
	speed, unit := secsPerStep, "s/it"
	if speed < 1 && speed > 0 {
		speed, unit = 1/speed, "it/s"
	}
	lf := ""
	if step == steps {
		lf = "\n"
	}
	return fmt.Sprintf("\r  |%s| %d/%d - %.2f%s\033[K%s", bar.String(), step, steps, speed, unit, lf)
}

// renderPNG encodes the index-th picture of a request: a gradient whose
// colours come from the prompt, the negative prompt, the seed and index.
func renderPNG(w io.Writer, prompt, negative string, seed int64, index, width, height int) error {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d", prompt, negative, seed, index)
	sum := h.Sum64()
	r0, g0, b0 := uint8(sum), uint8(sum>>8), uint8(sum>>16)
	r1, g1, b1 := uint8(sum>>24), uint8(sum>>32), uint8(sum>>40)
	img := image.NewNRGBA(image.Rect(0, 0, width, height))
	for y := range height {
		for x := range width {
			img.SetNRGBA(x, y, color.NRGBA{
				R: mix(r0, r1, x, width), G: mix(g0, g1, y, height), B: mix(b0, b1, x+y, width+height), A: 255,
			})
		}
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img)
}

func mix(a, b uint8, i, n int) uint8 {
	if n <= 1 {
		return a
	}
	return uint8((int(a)*(n-1-i) + int(b)*i) / (n - 1))
}
