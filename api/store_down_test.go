package api_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/store"
)

// downStore is a store whose backend cannot be reached (a Redis outage).
type downStore struct{ api.Store }

var errDown = fmt.Errorf("enqueue: %w: dial tcp 127.0.0.1:6379: connection refused", store.ErrUnavailable)

func (downStore) Enqueue(context.Context, *store.Job) error { return errDown }
func (downStore) Get(string) (store.Job, error)             { return store.Job{}, errDown }

// TestStoreUnavailable: while the shared queue cannot be reached, submits
// and job reads answer 503 store_unavailable with Retry-After, in the shape
// of the door they came through.
func TestStoreUnavailable(t *testing.T) {
	b := setupWith(t, setupOpts{server: func(*api.Server) {}})
	srv := api.New(b.cfg, b.ctl, downStore{b.store})
	t.Cleanup(srv.Close)
	b.handler = srv.Handler()
	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/jobs", `{"model":"llama","prompt":"hi"}`},
		{http.MethodGet, "/jobs/abc", ""},
	} {
		rec := b.do(t, r.method, r.path, r.body)
		var body struct {
			Error struct{ Code, Message string }
		}
		decodeJSON(t, rec, &body)
		if rec.Code != http.StatusServiceUnavailable || body.Error.Code != api.CodeStoreDown || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s: %d %+v, Retry-After %q; want 503 %s", r.method, r.path, rec.Code, body, rec.Header().Get("Retry-After"), api.CodeStoreDown)
		}
	}
}
