package api

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/store"
)

// ImagesPath is OpenAI's image generation route.
const ImagesPath = "/v1/images/generations"

// relayedImagesJob builds the job of a /v1/images/generations request for a
// model whose engine answers that route itself (Config.RelayImages): a
// durable endpoint/body job carrying the request as it came, which the
// engine answers in its own words. It returns a nil job, and no error,
// for every other model: those take stable-diffusion.cpp's prompt jobs.
func (s *Server) relayedImagesJob(body []byte) (*store.Job, bool, error) {
	var head struct {
		Model    string `json:"model"`
		Priority *int   `json:"priority"`
	}
	if err := decodeJSON(body, &head, false); err != nil {
		return nil, false, err
	}
	if head.Model == "" {
		head.Model = s.onlyDiffusionModel()
	}
	model, ok := s.resolveModel(head.Model)
	if !ok || !s.cfg.RelayImages[model] {
		return nil, false, nil
	}
	endpoint := ImagesPath
	job, err := s.validateSubmit(submitRequest{Model: model, Endpoint: &endpoint, Body: json.RawMessage(body), Priority: head.Priority})
	return job, true, err
}

// relayedAnswer answers a relayed images request with the engine's JSON,
// as the finished job stored it.
func (s *Server) relayedAnswer(c echo.Context, j store.Job) error {
	if err := unfinishedError(j); err != nil {
		return err
	}
	res, err := s.store.Result(j.ID)
	if err != nil {
		return fmt.Errorf("read result %s: %w", j.ID, err)
	}
	return c.JSONBlob(http.StatusOK, res)
}

// unfinishedError is the error of a job that ended without a result.
func unfinishedError(j store.Job) error {
	switch j.State {
	case store.JobStateFailed:
		return &Error{Status: http.StatusInternalServerError, Code: "job_failed", Message: fmt.Sprintf("job %s failed: %s", j.ID, j.Error)}
	case store.JobStateCancelled:
		return &Error{Status: http.StatusConflict, Code: "job_cancelled", Message: fmt.Sprintf("job %s was cancelled", j.ID)}
	}
	return nil
}
