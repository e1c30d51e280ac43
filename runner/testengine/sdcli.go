package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// runSDCLI plays sd-cli: load, sample each image, write the files.
func runSDCLI(o sdOptions) int {
	if err := loadModel(o); err != nil {
		sdLog("INFO", "main.cpp", 910, "new_sd_ctx_t failed")
		return 1
	}
	seed := o.seed
	if seed < 0 {
		seed = rand.Int64N(1 << 31)
	}
	for b := range o.batch {
		sdLog("INFO", "stable-diffusion.cpp", 3378, "generating image: %d/%d - seed %d", b+1, o.batch, seed+int64(b))
		sample(o, o.steps)
	}
	sdLog("INFO", "stable-diffusion.cpp", 3460, "decoding %d latents", o.batch)
	saved := 0
	for i, path := range outputPaths(o.output, o.batch) {
		ok := writeImage(path, o, seed+int64(i), i) == nil
		if ok {
			saved++
		}
		sdLog("INFO", "main.cpp", 490, "save result image %d to '%s' (%s)", i, path, map[bool]string{true: "success", false: "failure"}[ok])
	}
	sdLog("INFO", "main.cpp", 562, "%d/%d images saved", saved, o.batch)
	if saved == 0 {
		return 1
	}
	return 0
}

// outputPaths names the files as the real sd-cli does for -o out.png:
// out.png for one image, out_0.png, out_1.png, … for more; a missing or
// unknown extension becomes .png.
func outputPaths(output string, n int) []string {
	ext := filepath.Ext(output)
	base := output
	switch strings.ToLower(ext) {
	case ".png", ".jpg", ".jpeg", ".webp":
		base = strings.TrimSuffix(output, ext)
	default:
		ext = ".png"
	}
	if n == 1 {
		return []string{base + ext}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = base + "_" + strconv.Itoa(i) + ext
	}
	return out
}

func writeImage(path string, o sdOptions, seed int64, index int) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := renderPNG(f, o.prompt, o.negative, seed, index, o.width, o.height); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
