package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/vramcram/vramcram/api/wire"
)

// An images server run through the command engine (here the stand-in
// playing sd-server) answers OpenAI's /v1/images/generations itself: the
// route queues the request, as it came, as a durable endpoint/body job and
// answers with the engine's JSON.
func TestE2E_CommandImagesServer(t *testing.T) {
	bin, engine := buildBinaries(t)
	s := writeE2EConfig(t, engine)
	model := filepath.Join(s.dir, "img.safetensors")
	if err := os.WriteFile(model, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `  diffusion:
    - name: imgcmd
      model_path: %s
      vram_mb: 3000
      config:
        engine: command
        cmd: [%s, --test-role, sd-server, -m, "${MODEL_PATH}", --listen-ip, "${HOST}", --listen-port, "${PORT}"]
        health_path: /v1/models
`, model, engine)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, s.cfg, s.port)

	// "background" is no field of ours (stable-diffusion.cpp models refuse it):
	// it goes to the engine untouched, and "output_format" comes back from it.
	var out struct {
		Created      int64  `json:"created"`
		OutputFormat string `json:"output_format"`
		Data         []struct {
			B64JSON string `json:"b64_json"`
		} `json:"data"`
	}
	req := map[string]any{"model": "imgcmd", "prompt": "a red fox", "n": 2, "size": "64x48", "background": "opaque"}
	if code := d.do("POST", "/v1/images/generations", req, &out); code != http.StatusOK {
		t.Fatalf("POST /v1/images/generations: %d %+v", code, out)
	}
	if len(out.Data) != 2 || out.OutputFormat != "png" || out.Created == 0 {
		t.Fatalf("answer %+v; want the engine's two images and its output_format", out)
	}
	for i, im := range out.Data {
		b, err := base64.StdEncoding.DecodeString(im.B64JSON)
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil || cfg.Width != 64 || cfg.Height != 48 {
			t.Fatalf("image %d: %v %+v, want a 64x48 PNG", i, err, cfg)
		}
	}

	// It was a durable job for the route.
	var list struct {
		Jobs []wire.Job `json:"jobs"`
	}
	if code := d.do("GET", "/jobs?model=imgcmd", nil, &list); code != http.StatusOK || len(list.Jobs) != 1 {
		t.Fatalf("GET /jobs?model=imgcmd: %d %+v", code, list)
	}
	if j := list.Jobs[0]; j.Status != "completed" || j.Endpoint != "/v1/images/generations" {
		t.Fatalf("job %+v; want a completed /v1/images/generations job", j)
	}
}
