// Package wiretest helps tests that play VramCram's API for a client (the
// CLI's tests, the scripts' tests): small PNGs and the result document of a
// diffusion job.
package wiretest

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"testing"
)

// PNG is a 4×3 PNG of one colour.
func PNG(t testing.TB, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 3))
	for x := range 4 {
		for y := range 3 {
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// DiffusionResult is the result document of a diffusion job holding imgs,
// as GET /jobs/{id}/result answers it.
func DiffusionResult(imgs ...[]byte) map[string]any {
	var list []map[string]string
	for _, b := range imgs {
		list = append(list, map[string]string{"format": "png", "b64": base64.StdEncoding.EncodeToString(b)})
	}
	return map[string]any{"type": "diffusion", "images": list, "width": 4, "height": 3}
}
