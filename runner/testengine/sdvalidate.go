package main

import (
	"errors"
	"slices"
)

// sdVersion is what --version prints, and the first line of the usage.
const sdVersion = "stable-diffusion.cpp version testengine, commit testengine"

// validate checks the parsed flags as the real programs do once parsing
// succeeded (resolve_and_validate of the server, context and generation
// parameters): a refusal prints its line and the usage, exit 1, before any
// model is loaded.
func (o sdOptions) validate(role string) error {
	if role == roleSDServer && (o.listenPort < 0 || o.listenPort > 65535) {
		return errors.New("error: listen_port should be in the range [0, 65535]")
	}
	if role == roleSDCLI && o.output == "" {
		return errors.New("error: the following arguments are required: output_path")
	}
	if !slices.ContainsFunc(o.files, func(f [2]string) bool { return f[0] == "-m" || f[0] == "--diffusion-model" }) {
		return errors.New("error: the following arguments are required: model_path/diffusion_model")
	}
	switch {
	case o.batch <= 0:
		return errors.New("error: batch_count must be greater than 0")
	case o.steps <= 0:
		return errors.New("error: the sample_steps must be greater than 0")
	case o.cfg < 0:
		return errors.New("error: cfg_scale must be positive")
	}
	return nil
}
