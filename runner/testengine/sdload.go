package main

import (
	"os"
	"path/filepath"
	"time"
)

// sdLoadOrder is the order in which the real loader (init_model_loader in
// src/stable-diffusion.cpp) opens the model files, whatever their order in
// argv, with the name its log lines give each. The last value of a
// repeated flag wins.
var sdLoadOrder = []struct{ flag, what string }{
	{"-m", "model"}, {"--diffusion-model", "diffusion model"}, {"--clip_l", "clip_l"}, {"--clip_g", "clip_g"},
	{"--t5xxl", "t5xxl"}, {"--llm", "llm"}, {"--vae", "vae"}, {"--taesd", "tae"}, {"--control-net", "control net"},
}

// loadModel checks the model files as the real loader does and spends the
// load delay. Failures print the real messages: every file is tried, a
// failed -m is an error line and any other a warning, and then the version
// cannot be told ("get sd version from file failed: '<-m path>'") when
// neither -m nor --diffusion-model loaded; a failed control net stops at
// once. When a main file loaded but another did not, the real outcome
// depends on the model (a checkpoint may bring its own VAE); the stand-in
// fails the load.
func loadModel(o sdOptions) error {
	last := map[string]string{}
	for _, f := range o.files {
		last[f[0]] = f[1]
	}
	mainLoaded, failed := false, false
	for _, x := range sdLoadOrder {
		path, ok := last[x.flag]
		if !ok {
			continue
		}
		if x.flag == "--control-net" {
			if !openModelFile(path, o.failLoad) {
				sdLog("ERROR", "stable-diffusion.cpp", 835, "init control net model loader from file failed: '%s'", path)
				return errLoad
			}
			continue
		}
		sdLog("INFO", "stable-diffusion.cpp", 713, "loading %s from '%s'", x.what, path)
		switch {
		case openModelFile(path, o.failLoad):
			mainLoaded = mainLoaded || x.flag == "-m" || x.flag == "--diffusion-model"
		case x.flag == "-m":
			sdLog("ERROR", "stable-diffusion.cpp", 715, "init model loader from file failed: '%s'", path)
			failed = true
		default:
			sdLog("WARN", "stable-diffusion.cpp", 722, "loading %s from '%s' failed", x.what, path)
			failed = true
		}
	}
	if !mainLoaded {
		sdLog("ERROR", "stable-diffusion.cpp", 905, "get sd version from file failed: '%s'", last["-m"])
		return errLoad
	}
	if failed {
		sdLog("ERROR", "stable-diffusion.cpp", 1699, "model params eager load failed")
		return errLoad
	}
	time.Sleep(o.loadDelay)
	sdLog("INFO", "stable-diffusion.cpp", 907, "Version: SD 1.x ")
	sdLog("INFO", "stable-diffusion.cpp", 1120, "total params memory size = 2231.84MB (VRAM 2231.84MB, RAM 0.00MB)")
	return nil
}

// openModelFile plays ModelLoader::init_from_file: a directory is a
// diffusers model that needs unet/diffusion_pytorch_model.safetensors;
// any other existing file loads unless failLoad (--test-fail-load) makes
// it "of an unknown format".
func openModelFile(path string, failLoad bool) bool {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		sdLog("INFO", "model_loader.cpp", 233, "load %s using diffusers format", path)
		unet := filepath.Join(path, "unet", "diffusion_pytorch_model.safetensors")
		if _, err := os.Stat(unet); err != nil || failLoad {
			sdLog("ERROR", "model_loader.cpp", 321, "failed to open '%s'", unet)
			return false
		}
		return true
	case err != nil:
		sdLog("WARN", "model_loader.cpp", 254, "file %s not found", path)
		return false
	case failLoad:
		sdLog("WARN", "model_loader.cpp", 252, "unknown format %s", path)
		return false
	}
	sdLog("INFO", "model_loader.cpp", 243, "load %s using safetensors format", path)
	return true
}
