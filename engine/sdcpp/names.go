package sdcpp

import (
	"slices"
	"strings"
)

// SampleMethods are stable-diffusion.cpp's sampling methods
// (sample_method_to_str in src/stable-diffusion.cpp, 2026-08).
var SampleMethods = []string{"euler", "euler_a", "heun", "dpm2", "dpm++2s_a", "dpm++2m", "dpm++2mv2", "ipndm",
	"ipndm_v", "lcm", "ddim_trailing", "tcd", "res_multistep", "res_2s", "er_sde", "euler_cfg_pp",
	"euler_a_cfg_pp", "euler_ge", "dpm++2m_sde", "dpm++2m_sde_bt", "lms"}

// Schedulers are its schedulers (scheduler_to_str); str_to_scheduler also
// takes the alias "normal" for discrete.
var Schedulers = []string{"discrete", "karras", "exponential", "ays", "gits", "sgm_uniform", "simple",
	"smoothstep", "kl_optimal", "lcm", "bong_tangent", "ltx2", "logit_normal", "flux2", "flux", "beta"}

// schedulerAliases are names str_to_scheduler accepts besides Schedulers.
var schedulerAliases = []string{"normal"}

// KnownSampleMethod reports whether sd-cli accepts name for
// --sampling-method. sd-cli exits 1 on any other; sd-server silently
// ignores it, so both are checked here.
func KnownSampleMethod(name string) bool { return slices.Contains(SampleMethods, name) }

// KnownScheduler reports whether sd-cli accepts name for --scheduler.
func KnownScheduler(name string) bool {
	return slices.Contains(Schedulers, name) || slices.Contains(schedulerAliases, name)
}

// nameList is a list of names for an error message.
func nameList(names []string) string { return strings.Join(names, ", ") }
