package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/api/batch"
	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/store"
)

// Batches is the back end of the OpenAI Files and Batch routes
// (batch.Manager).
type Batches interface {
	SaveFile(ctx context.Context, filename string, r io.Reader) (store.File, error)
	GetFile(id string) (store.File, error)
	ListFiles(purpose, after string, limit int) ([]store.File, error)
	OpenFile(id string) (store.File, *os.File, error)
	DeleteFile(id string) (store.File, error)
	Create(ctx context.Context, req batch.CreateRequest) (store.Batch, error)
	Get(id string) (store.Batch, error)
	List(after string, limit int) ([]store.Batch, error)
	Cancel(id string) (store.Batch, error)
	Stats() *batch.Stats
}

// routeBatches registers /v1/files and /v1/batches when a back end is set.
func (s *Server) routeBatches(e *echo.Echo) {
	h := map[string]echo.HandlerFunc{
		"POST /v1/files": s.uploadFile, "GET /v1/files": s.listFiles, "GET /v1/files/:id": s.getFile,
		"GET /v1/files/:id/content": s.fileContent, "DELETE /v1/files/:id": s.deleteFile,
		"POST /v1/batches": s.createBatch, "GET /v1/batches": s.listBatches, "GET /v1/batches/:id": s.getBatch,
		"POST /v1/batches/:id/cancel": s.cancelBatch,
	}
	for route, f := range h {
		method, path, _ := strings.Cut(route, " ")
		switch {
		case s.cfg.Batches != nil:
			e.Add(method, path, f)
		case s.cfg.BatchesOff != "":
			e.Add(method, path, s.batchesOff)
		}
	}
	switch {
	case s.cfg.Batches != nil:
		e.GET("/batches", s.dashboardBatches)
	case s.cfg.BatchesOff != "":
		e.GET("/batches", s.batchesOff)
	}
}

// batchError maps the manager's errors onto API errors.
func batchError(err error) error {
	var be *batch.Error
	if !errors.As(err, &be) {
		return err
	}
	ae := &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Message: be.Message, Param: be.Param}
	switch be.Kind {
	case batch.KindNotFound:
		ae.Status, ae.Code = http.StatusNotFound, CodeNotFound
	case batch.KindTooLarge:
		ae.Status, ae.Code = http.StatusRequestEntityTooLarge, CodeBodyTooLarge
	case batch.KindConflict:
		ae.Status, ae.Code = http.StatusConflict, CodeFinished
	}
	return ae
}

// unix is a time as OpenAI's integer seconds, nil when unset.
func unix(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func viewBatch(b store.Batch) wire.Batch {
	v := wire.Batch{
		ID: b.ID, Object: "batch", Endpoint: b.Endpoint, InputFileID: b.InputFileID, CompletionWindow: b.CompletionWindow,
		Status: b.Status, OutputFileID: optString(b.OutputFileID), ErrorFileID: optString(b.ErrorFileID),
		CreatedAt: b.CreatedAt.Unix(), InProgressAt: unix(b.InProgressAt), ExpiresAt: unix(b.ExpiresAt),
		FinalizingAt: unix(b.FinalizingAt), CompletedAt: unix(b.CompletedAt), FailedAt: unix(b.FailedAt),
		ExpiredAt: unix(b.ExpiredAt), CancellingAt: unix(b.CancellingAt), CancelledAt: unix(b.CancelledAt),
		RequestCounts: b.Counts, Metadata: b.Metadata,
	}
	if len(b.Errors) > 0 {
		v.Errors = &wire.BatchErrors{Object: "list", Data: b.Errors}
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	return v
}

// listLimit reads ?limit= (1..100, default 20).
func listLimit(c echo.Context) (int, error) {
	l := c.QueryParam("limit")
	if l == "" {
		return 20, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 100 {
		return 0, fieldErr("limit", "must be an integer between 1 and 100")
	}
	return n, nil
}

// page is an OpenAI list answer.
type page[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

func newPage[T any](items []T, limit int, id func(T) string) page[T] {
	p := page[T]{Object: "list", Data: items}
	if len(items) > limit {
		p.Data, p.HasMore = items[:limit], true
	}
	if len(p.Data) > 0 {
		p.FirstID, p.LastID = optString(id(p.Data[0])), optString(id(p.Data[len(p.Data)-1]))
	}
	if p.Data == nil {
		p.Data = []T{}
	}
	return p
}

// createBatch handles POST /v1/batches.
func (s *Server) createBatch(c echo.Context) error {
	var req batch.CreateRequest
	if err := s.readJSON(c, &req); err != nil {
		return err
	}
	b, err := s.cfg.Batches.Create(c.Request().Context(), req)
	if err != nil {
		return batchError(err)
	}
	return c.JSON(http.StatusOK, viewBatch(b))
}

// getBatch handles GET /v1/batches/{id}.
func (s *Server) getBatch(c echo.Context) error {
	b, err := s.cfg.Batches.Get(c.Param("id"))
	if err != nil {
		return batchError(err)
	}
	return c.JSON(http.StatusOK, viewBatch(b))
}

// listBatches handles GET /v1/batches?limit=&after=: newest first.
func (s *Server) listBatches(c echo.Context) error {
	limit, err := listLimit(c)
	if err != nil {
		return err
	}
	bs, err := s.cfg.Batches.List(c.QueryParam("after"), limit+1)
	if err != nil {
		return fmt.Errorf("list batches: %w", err)
	}
	views := make([]wire.Batch, len(bs))
	for k, b := range bs {
		views[k] = viewBatch(b)
	}
	return c.JSON(http.StatusOK, newPage(views, limit, func(v wire.Batch) string { return v.ID }))
}

// cancelBatch handles POST /v1/batches/{id}/cancel.
func (s *Server) cancelBatch(c echo.Context) error {
	b, err := s.cfg.Batches.Cancel(c.Param("id"))
	if err != nil {
		return batchError(err)
	}
	return c.JSON(http.StatusOK, viewBatch(b))
}

// batchProgress is one batch as the dashboard lists it.
type batchProgress struct {
	ID            string            `json:"id"`
	Status        store.BatchStatus `json:"status"`
	Endpoint      string            `json:"endpoint"`
	CreatedAt     int64             `json:"created_at"`
	RequestCounts store.BatchCounts `json:"request_counts"`
}

// dashboardBatches handles GET /batches: the latest batches with their
// progress, and the lines of unfinished batches by state.
func (s *Server) dashboardBatches(c echo.Context) error {
	bs, err := s.cfg.Batches.List("", 20)
	if err != nil {
		return fmt.Errorf("list batches: %w", err)
	}
	out := make([]batchProgress, len(bs))
	for k, b := range bs {
		out[k] = batchProgress{ID: b.ID, Status: b.Status, Endpoint: b.Endpoint, CreatedAt: b.CreatedAt.Unix(), RequestCounts: b.Counts}
	}
	return c.JSON(http.StatusOK, map[string]any{"batches": out, "lines": s.cfg.Batches.Stats().Lines})
}

// batchesOff answers the Files and Batch routes where they are off.
func (s *Server) batchesOff(echo.Context) error {
	return apiErr(http.StatusNotImplemented, CodeNotAvailable, s.cfg.BatchesOff)
}
