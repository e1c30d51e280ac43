package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeScheduler implements api.Scheduler with func fields. A nil field gets a
// harmless default: Admit accepts, Notify and Cancel do nothing, Snapshot is
// empty, JobProgress reports nothing, LastBeat is the test clock's now.
type fakeScheduler struct {
	AdmitFunc       func(ctx context.Context, model string) error
	NotifyFunc      func(model string)
	CancelFunc      func(ctx context.Context, id string) (bool, error)
	SnapshotFunc    func(ctx context.Context) (scheduler.Snapshot, error)
	JobProgressFunc func(ctx context.Context, id string) (scheduler.Progress, bool, error)
	LastBeatFunc    func() time.Time
	BusFunc         func() *scheduler.Bus
}

var _ api.Scheduler = (*fakeScheduler)(nil)

func (f *fakeScheduler) Admit(ctx context.Context, model string) error {
	if f.AdmitFunc == nil {
		return nil
	}
	return f.AdmitFunc(ctx, model)
}

func (f *fakeScheduler) Notify(model string) {
	if f.NotifyFunc != nil {
		f.NotifyFunc(model)
	}
}

func (f *fakeScheduler) Cancel(ctx context.Context, id string) (bool, error) {
	if f.CancelFunc == nil {
		return false, nil
	}
	return f.CancelFunc(ctx, id)
}

func (f *fakeScheduler) Snapshot(ctx context.Context) (scheduler.Snapshot, error) {
	if f.SnapshotFunc == nil {
		return scheduler.Snapshot{}, nil
	}
	return f.SnapshotFunc(ctx)
}

func (f *fakeScheduler) JobProgress(ctx context.Context, id string) (scheduler.Progress, bool, error) {
	if f.JobProgressFunc == nil {
		return scheduler.Progress{}, false, nil
	}
	return f.JobProgressFunc(ctx, id)
}

func (f *fakeScheduler) LastBeat() time.Time {
	if f.LastBeatFunc == nil {
		return time.Now()
	}
	return f.LastBeatFunc()
}

func (f *fakeScheduler) Bus() *scheduler.Bus { return f.BusFunc() }

// fakeController is a fakeScheduler that also implements
// api.ModelController and api.JobTexter, as the real scheduler does.
type fakeController struct {
	*fakeScheduler
	LoadFunc    func(ctx context.Context, model string) error
	UnloadFunc  func(ctx context.Context, model string) error
	JobTextFunc func(ctx context.Context, id string) (string, int, bool, error)
}

var (
	_ api.ModelController = (*fakeController)(nil)
	_ api.JobTexter       = (*fakeController)(nil)
)

// JobText reports nothing running unless JobTextFunc is set.
func (f *fakeController) JobText(ctx context.Context, id string) (string, int, bool, error) {
	if f.JobTextFunc == nil {
		return "", 0, false, nil
	}
	return f.JobTextFunc(ctx, id)
}

func (f *fakeController) Load(ctx context.Context, model string) error {
	if f.LoadFunc == nil {
		return nil
	}
	return f.LoadFunc(ctx, model)
}

func (f *fakeController) Unload(ctx context.Context, model string) error {
	if f.UnloadFunc == nil {
		return nil
	}
	return f.UnloadFunc(ctx, model)
}

// calls records the models or IDs a fake was called with.
type calls struct {
	mu   sync.Mutex
	args []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.args = append(c.args, s)
}

func (c *calls) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.args...)
}

// testClock is a NowFunc that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testModels are the configured models of every test server.
var testModels = api.ModelKinds{"llama": engine.KindLLM, "qwen": engine.KindLLM, "sd": engine.KindDiffusion}

type testBundle struct {
	sched   *fakeScheduler
	ctl     *fakeController // sched plus Load and Unload; what the server gets
	cfg     api.Config
	server  *api.Server
	store   *store.Store
	bus     *scheduler.Bus
	clock   *testClock
	handler http.Handler
	admits  *calls
	notifs  *calls
	cancels *calls
}

type setupOpts struct {
	config    func(*api.Config)
	storeOpts store.Options
	server    func(*api.Server) // called before the handler is taken
}

func setup(t testing.TB) *testBundle { return setupWith(t, setupOpts{}) }

// setupWith builds a server over a real store in t.TempDir and a fake
// scheduler that records Admit, Notify and Cancel calls. Cleanup checks the
// store's consistency and closes it.
func setupWith(t testing.TB, o setupOpts) *testBundle {
	t.Helper()
	o.storeOpts.NoSync = true
	st, err := store.Open(t.TempDir()+"/q.db", o.storeOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	b := &testBundle{
		store:   st,
		bus:     scheduler.NewBus(),
		clock:   &testClock{now: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)},
		admits:  &calls{},
		notifs:  &calls{},
		cancels: &calls{},
	}
	b.sched = &fakeScheduler{
		AdmitFunc: func(_ context.Context, model string) error {
			b.admits.add(model)
			return nil
		},
		NotifyFunc: b.notifs.add,
		CancelFunc: func(_ context.Context, id string) (bool, error) {
			b.cancels.add(id)
			return true, nil
		},
		LastBeatFunc: b.clock.Now,
		BusFunc:      func() *scheduler.Bus { return b.bus },
	}
	cfg := api.Config{
		ModelTypes:     testModels,
		MaxPromptChars: 10,
		MaxAttempts:    4,
		Version:        "v-test",
		NowFunc:        b.clock.Now,
	}
	if o.config != nil {
		o.config(&cfg)
	}
	b.ctl = &fakeController{fakeScheduler: b.sched}
	b.cfg = cfg
	b.server = api.New(cfg, b.ctl, st)
	t.Cleanup(b.server.Close)
	if o.server != nil {
		o.server(b.server)
	}
	b.handler = b.server.Handler()
	return b
}

// do sends one request to the handler. hdr holds header name/value pairs.
func (b *testBundle) do(t testing.TB, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

// submit posts body to /jobs, requires a 202 and returns the job ID.
func (b *testBundle) submit(t testing.TB, body string) string {
	t.Helper()
	rec := b.do(t, http.MethodPost, "/jobs", body)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST /jobs %s: status %d, body %s", body, rec.Code, rec.Body)
	}
	var out struct {
		JobID string `json:"job_id"`
	}
	decodeJSON(t, rec, &out)
	return out.JobID
}

// enqueue puts a job for model straight into the store.
func (b *testBundle) enqueue(t testing.TB, model string) store.Job {
	t.Helper()
	j := &store.Job{ID: store.NewID(), Model: model, Type: string(testModels[model]), Prompt: "hi"}
	if err := b.store.Enqueue(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return *j
}

// claim moves the head of model's queue to running.
func (b *testBundle) claim(t testing.TB, model string) store.Job {
	t.Helper()
	j, err := b.store.Claim(model)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func decodeJSON(t testing.TB, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body, err)
	}
}

// apiError is the JSON shape of every error response.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Status string `json:"status"` // only on some errors
}

// parseError checks that body is an error of the common shape: an "error"
// object with exactly a non-empty code and message (plus, at the top level,
// only the keys in extra).
func parseError(body []byte, extra ...string) (apiError, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return apiError{}, err
	}
	for k := range top {
		if k != "error" && !strings.Contains(strings.Join(extra, ","), k) {
			return apiError{}, errors.New("unexpected top-level key " + k)
		}
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		return apiError{}, err
	}
	if len(inner) != 2 || inner["code"] == nil || inner["message"] == nil {
		return apiError{}, errors.New("error object must have exactly code and message: " + string(top["error"]))
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		return apiError{}, err
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		return apiError{}, errors.New("empty code or message")
	}
	return e, nil
}

// wantError checks status, the error shape and code, and that the message
// contains each of msgParts.
func wantError(t testing.TB, rec *httptest.ResponseRecorder, status int, code string, msgParts ...string) apiError {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e, err := parseError(rec.Body.Bytes(), "status")
	if err != nil {
		t.Fatalf("error body %s: %v", rec.Body, err)
	}
	if e.Error.Code != code {
		t.Errorf("code %q, want %q (message %q)", e.Error.Code, code, e.Error.Message)
	}
	for _, p := range msgParts {
		if !strings.Contains(e.Error.Message, p) {
			t.Errorf("message %q does not contain %q", e.Error.Message, p)
		}
	}
	return e
}

// keys returns the top-level keys of a JSON object.
func keys(t testing.TB, body []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return m
}
