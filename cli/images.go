package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// imageEntry is one image of a diffusion result:
// {"type":"diffusion","images":[{"format":"png","b64":"…"}],…}.
type imageEntry struct {
	Format string `json:"format"`
	B64    string `json:"b64"`
}

// imagePaths names the files for n images: output as given for one image,
// with -1, -2… before the extension for several; by default JOB_ID.EXT in the
// working directory.
func imagePaths(output, id string, formats []string) []string {
	paths := make([]string, len(formats))
	for i, f := range formats {
		ext := "." + strings.ToLower(f)
		if f == "" {
			ext = ".png"
		}
		base := output
		if base == "" {
			base = id + ext
		}
		if len(formats) > 1 {
			e := filepath.Ext(base)
			base = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(base, e), i+1, e)
		}
		paths[i] = base
	}
	return paths
}

// saveImages decodes and writes the images; it returns the paths written.
func saveImages(images []imageEntry, output, id string) ([]string, error) {
	if len(images) == 0 {
		return nil, errors.New("the result has no images")
	}
	formats := make([]string, len(images))
	for i, im := range images {
		formats[i] = im.Format
	}
	var written []string
	for i, path := range imagePaths(output, id, formats) {
		data, err := base64.StdEncoding.DecodeString(images[i].B64)
		if err != nil {
			return written, fmt.Errorf("image %d: bad base64 data: %w", i+1, err)
		}
		if len(data) == 0 {
			return written, fmt.Errorf("image %d is empty", i+1)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return written, fmt.Errorf("write image %d: %w", i+1, err)
		}
		written = append(written, path)
	}
	return written, nil
}
