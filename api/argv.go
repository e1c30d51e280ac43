package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/vramcram/vramcram/engine/sdcpp"
)

// MaxArgvPromptBytes is the longest prompt (and negative prompt), in bytes,
// accepted for a model whose engine takes it as one command-line argument
// (sd-cli's -p and -n). Linux refuses to exec an argument of
// MAX_ARG_STRLEN (32 pages: 128 KiB) or more, its terminating NUL
// included; such a job would fail at every attempt. An engine that reads
// long prompts from a file instead can lift this.
const MaxArgvPromptBytes = 128<<10 - 1

// checkDiffusionText refuses, at submission, diffusion prompts that no
// engine run can take: a NUL byte (C strings end there: argv and the
// engines' own parsers cut the prompt short), text naming sd-server's
// parameter tag in any letter case (it would smuggle parameters past these
// checks, or crash the server), and for argv engines a prompt beyond
// MaxArgvPromptBytes.
func (s *Server) checkDiffusionText(model, prompt, negative string) error {
	for _, f := range []struct{ name, v string }{{"prompt", prompt}, {"params.negative_prompt", negative}} {
		if strings.IndexByte(f.v, 0) >= 0 {
			return apiErr(http.StatusBadRequest, CodeInvalid, f.name+": must not contain NUL bytes (\\u0000)")
		}
		if sdcpp.HasExtraArgsTag(f.v) {
			return apiErr(http.StatusBadRequest, CodeInvalid, f.name+": must not contain sd_cpp_extra_args, in any form "+
				"(sd-server's parameter tag: set parameters in params instead)")
		}
		if s.cfg.ArgvPromptModels[model] && len(f.v) > MaxArgvPromptBytes {
			return apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf(
				"%s: %d bytes exceeds the %d bytes that model %s's engine (sd-cli) takes as one command-line argument",
				f.name, len(f.v), MaxArgvPromptBytes, model))
		}
	}
	return nil
}
