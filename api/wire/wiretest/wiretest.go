// Package wiretest helps tests that play VramCram's API for a client (the
// CLI's tests, the scripts' tests): small PNGs and the result document of a
// diffusion job.
package wiretest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"testing"

	"github.com/vramcram/vramcram/scheduler"
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

// WriteJSON answers v as JSON with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeEvents plays GET /events: it sends each event of ch as VramCram's
// event stream does, until the client leaves.
func ServeEvents(w http.ResponseWriter, r *http.Request, ch <-chan scheduler.Event) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": connected\n\n")
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-ch:
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, b)
			w.(http.Flusher).Flush()
		}
	}
}
