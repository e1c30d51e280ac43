package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vramcram/vramcram/api"
	"github.com/vramcram/vramcram/api/batch"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// setupBatches is a test server whose batch routes run on a batch manager
// over a store of its own (its loop is not started: these tests check the
// routes, the batch package's own tests the progress).
func setupBatches(t *testing.T, maxFile int64, opts ...func(*api.Config)) *testBundle {
	t.Helper()
	st, err := store.Open(t.TempDir()+"/batch.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bus := scheduler.NewBus()
	sched := &fakeScheduler{
		AdmitFunc:  func(context.Context, string) error { return nil },
		NotifyFunc: func(string) {},
		BusFunc:    func() *scheduler.Bus { return bus },
	}
	mgr := batch.New(batch.Config{Dir: t.TempDir(), MaxFileBytes: maxFile,
		Endpoints: map[string][]string{"llama": {"/v1/chat/completions"}}}, st, sched)
	return setupWith(t, setupOpts{config: func(c *api.Config) {
		c.Batches = mgr
		for _, o := range opts {
			o(c)
		}
	}})
}

func upload(t *testing.T, b *testBundle, content, purpose string) *httptest.ResponseRecorder {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write([]byte(content))
	if purpose != "" {
		mw.WriteField("purpose", purpose)
	}
	mw.Close()
	req := httptest.NewRequest(http.MethodPost, "/v1/files", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

func batchOAIErr(t *testing.T, rec *httptest.ResponseRecorder, status int, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Message, Type, Code string
			Param               *string
		}
	}
	if rec.Code != status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("want an OpenAI error %d, got %d %s", status, rec.Code, rec.Body)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Fatalf("param %v, want %s (%s)", e.Error.Param, param, rec.Body)
	}
}

func TestBatchRoutes_Files(t *testing.T) {
	b := setupBatches(t, 100)
	line := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"llama"}}` + "\n"
	rec := upload(t, b, line, "batch")
	var f map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &f) != nil {
		t.Fatalf("upload: %d %s", rec.Code, rec.Body)
	}
	id, _ := f["id"].(string)
	if f["object"] != "file" || f["purpose"] != "batch" || f["bytes"] != float64(len(line)) || f["filename"] != "in.jsonl" || !strings.HasPrefix(id, "file-") {
		t.Fatalf("file object: %v", f)
	}
	if rec := b.do(t, "GET", "/v1/files/"+id+"/content", ""); rec.Code != http.StatusOK || rec.Body.String() != line {
		t.Fatalf("content: %d %q", rec.Code, rec.Body)
	}
	var page struct {
		Object  string
		Data    []map[string]any
		HasMore bool `json:"has_more"`
	}
	if rec := b.do(t, "GET", "/v1/files?limit=1", ""); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &page) != nil ||
		page.Object != "list" || len(page.Data) != 1 || page.Data[0]["id"] != id || page.HasMore {
		t.Fatalf("list: %s", rec.Body)
	}
	batchOAIErr(t, upload(t, b, line, "fine-tune"), http.StatusBadRequest, "purpose")
	batchOAIErr(t, upload(t, b, line, ""), http.StatusBadRequest, "purpose")
	batchOAIErr(t, upload(t, b, strings.Repeat("x", 101), "batch"), http.StatusRequestEntityTooLarge, "file")
	if rec := b.do(t, "GET", "/v1/files?limit=100", ""); json.Unmarshal(rec.Body.Bytes(), &page) != nil || len(page.Data) != 1 {
		t.Fatalf("rejected uploads were kept: %s", rec.Body)
	}
	if rec := b.do(t, "DELETE", "/v1/files/"+id, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"deleted":true`) {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	batchOAIErr(t, b.do(t, "GET", "/v1/files/"+id, ""), http.StatusNotFound, "")
	batchOAIErr(t, b.do(t, "GET", "/v1/files/"+id+"/content", ""), http.StatusNotFound, "")
}

func TestBatchRoutes_Batches(t *testing.T) {
	b := setupBatches(t, 1000)
	line := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"llama"}}` + "\n"
	var f struct{ ID string }
	json.Unmarshal(upload(t, b, line, "batch").Body.Bytes(), &f)
	for body, param := range map[string]string{
		`{"endpoint":"/v1/chat/completions","completion_window":"24h"}`:                                "input_file_id",
		`{"input_file_id":"` + f.ID + `","endpoint":"/v1/moderations","completion_window":"24h"}`:      "endpoint",
		`{"input_file_id":"` + f.ID + `","endpoint":"/v1/chat/completions","completion_window":"48h"}`: "completion_window",
	} {
		batchOAIErr(t, b.do(t, "POST", "/v1/batches", body), http.StatusBadRequest, param)
	}
	batchOAIErr(t, b.do(t, "POST", "/v1/batches", `{"input_file_id":"file-nope","endpoint":"/v1/chat/completions","completion_window":"24h"}`),
		http.StatusNotFound, "input_file_id")
	rec := b.do(t, "POST", "/v1/batches", `{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"k":"v"}}`)
	var bt map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &bt) != nil {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	id, _ := bt["id"].(string)
	for k, want := range map[string]any{"object": "batch", "status": "validating", "input_file_id": f.ID,
		"completion_window": "24h", "output_file_id": nil, "errors": nil, "in_progress_at": nil} {
		if got, ok := bt[k]; !ok || got != want {
			t.Fatalf("%s = %v, want %v (%s)", k, got, want, rec.Body)
		}
	}
	if bt["expires_at"].(float64)-bt["created_at"].(float64) != 86400 || bt["metadata"].(map[string]any)["k"] != "v" {
		t.Fatalf("batch: %s", rec.Body)
	}
	if rc, _ := bt["request_counts"].(map[string]any); rc == nil || len(rc) != 3 {
		t.Fatalf("request_counts: %v", bt["request_counts"])
	}
	if rec := b.do(t, "GET", "/v1/batches?limit=1&after="+id, ""); !strings.Contains(rec.Body.String(), `"data":[]`) {
		t.Fatalf("page after the only batch: %s", rec.Body)
	}
	rec = b.do(t, "POST", "/v1/batches/"+id+"/cancel", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"status":"cancelling"`) {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	batchOAIErr(t, b.do(t, "GET", "/v1/batches/batch_nope", ""), http.StatusNotFound, "")
	if rec := b.do(t, "GET", "/batches", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("dashboard list: %d %s", rec.Code, rec.Body)
	}
}

func TestBatchRoutes_Metrics(t *testing.T) {
	b := setupBatches(t, 100)
	m := withMetrics(t, b)
	m.RegisterBatches(b.cfg.Batches)
	out := scrape(t, m)
	for _, series := range []string{`vramcram_batches{status="in_progress"} 0`, `vramcram_batches{status="expired"} 0`,
		`vramcram_batch_lines{state="pending"} 0`, `vramcram_batch_lines{state="running"} 0`} {
		if !strings.Contains(out, series+"\n") {
			t.Fatalf("no %s in\n%s", series, out)
		}
	}
}

// Where batches are off (a fleet node), the routes say why in OpenAI's
// shape rather than 404.
func TestBatchRoutes_Off(t *testing.T) {
	b := setupWith(t, setupOpts{config: func(c *api.Config) { c.BatchesOff = "needs storage.backend bbolt" }})
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/v1/batches"}, {http.MethodGet, "/v1/batches/batch_x"}, {http.MethodGet, "/v1/files"},
	} {
		rec := httptest.NewRecorder()
		b.handler.ServeHTTP(rec, httptest.NewRequest(r.method, r.path, nil))
		batchOAIErr(t, rec, http.StatusNotImplemented, "")
		if !strings.Contains(rec.Body.String(), "needs storage.backend bbolt") {
			t.Fatalf("%s %s: %s", r.method, r.path, rec.Body)
		}
	}
	// The dashboard's /batches too, in our shape (it panicked on a nil
	// manager before).
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/batches", nil))
	if rec.Code != http.StatusNotImplemented || !strings.Contains(rec.Body.String(), `"code":"not_available"`) {
		t.Fatalf("GET /batches: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder() // with neither, no routes
	setup(t).handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/batches", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("no batches configured: %d %s", rec.Code, rec.Body)
	}
}
