package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/scheduler"
)

func TestLoadUnload(t *testing.T) {
	t.Parallel()

	t.Run("Accepted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var loads, unloads calls
		b.ctl.LoadFunc = func(_ context.Context, m string) error { loads.add(m); return nil }
		b.ctl.UnloadFunc = func(_ context.Context, m string) error { unloads.add(m); return nil }
		for _, tt := range []struct{ path, model, action string }{
			{"/models/llama/load", "llama", "load"},
			{"/models/sd/unload", "sd", "unload"},
		} {
			rec := b.do(t, http.MethodPost, tt.path, "")
			if rec.Code != http.StatusAccepted {
				t.Fatalf("POST %s: %d %s", tt.path, rec.Code, rec.Body)
			}
			var out map[string]string
			decodeJSON(t, rec, &out)
			if out["model"] != tt.model || out["action"] != tt.action || out["status"] != "accepted" || len(out) != 3 {
				t.Errorf("POST %s: body %s", tt.path, rec.Body)
			}
		}
		if !slices.Equal(loads.get(), []string{"llama"}) || !slices.Equal(unloads.get(), []string{"sd"}) {
			t.Errorf("loads %v, unloads %v", loads.get(), unloads.get())
		}
	})

	t.Run("UnknownModel", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.ctl.LoadFunc = func(context.Context, string) error { t.Error("Load called"); return nil }
		b.ctl.UnloadFunc = func(context.Context, string) error { t.Error("Unload called"); return nil }
		wantError(t, b.do(t, http.MethodPost, "/models/gpt-9/load", ""), http.StatusNotFound, api.CodeUnknownModel, "gpt-9", "llama, qwen, sd")
		wantError(t, b.do(t, http.MethodPost, "/models/LLAMA/unload", ""), http.StatusNotFound, api.CodeUnknownModel)
		for _, path := range []string{"/models/..%2F..%2Fetc%2Fpasswd/load", "/models/%2e%2e/unload", "/models/ll%00ama/load"} {
			rec := b.do(t, http.MethodPost, path, "")
			if rec.Code != http.StatusNotFound {
				t.Errorf("POST %s: %d %s", path, rec.Code, rec.Body)
			}
		}
		wantError(t, b.do(t, http.MethodGet, "/models/llama/load", ""), http.StatusMethodNotAllowed, api.CodeMethod)
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			err    error
			status int
			code   string
		}{
			{"Unavailable", fmt.Errorf("sd: %w: file missing", scheduler.ErrUnavailable), 503, api.CodeUnavailable},
			{"TooLarge", fmt.Errorf("sd: %w", scheduler.ErrTooLarge), 422, api.CodeTooLarge},
			{"Stopped", scheduler.ErrStopped, 503, api.CodeShuttingDown},
			{"Internal", errors.New("secret"), 500, api.CodeInternal},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				b.ctl.LoadFunc = func(context.Context, string) error { return tt.err }
				b.ctl.UnloadFunc = func(context.Context, string) error { return tt.err }
				wantError(t, b.do(t, http.MethodPost, "/models/sd/load", ""), tt.status, tt.code)
				wantError(t, b.do(t, http.MethodPost, "/models/sd/unload", ""), tt.status, tt.code)
			})
		}
	})

	t.Run("NotAController", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		h := api.New(b.cfg, b.sched, b.store).Handler() // the bare fake has no Load/Unload
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/models/llama/load", nil))
		wantError(t, rec, http.StatusNotImplemented, api.CodeInternal, "not available")
	})
}
