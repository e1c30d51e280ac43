package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// Diffusion results: the stored document names image files under
// Config.ImageDir/JOB_ID/; these handlers read them.

// asDiffusion decodes a stored result if it is a diffusion result.
func asDiffusion(res []byte) (sdcpp.Result, bool) {
	var head struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(res, &head) != nil || head.Type != string(engine.KindDiffusion) {
		return sdcpp.Result{}, false
	}
	var d sdcpp.Result
	if json.Unmarshal(res, &d) != nil {
		return sdcpp.Result{}, false
	}
	return d, true
}

// readImage returns the bytes of one image of job id.
func (s *Server) readImage(id string, im sdcpp.Image) ([]byte, error) {
	path, err := sdcpp.ImagePath(s.cfg.ImageDir, id, im.File)
	if err != nil {
		return nil, fmt.Errorf("image of job %s: %w", id, err)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("the image file of job %s is gone", id))
	}
	if err != nil {
		return nil, fmt.Errorf("read image of job %s: %w", id, err)
	}
	return b, nil
}

// sendDiffusion answers GET /jobs/{id}/result for a diffusion job: the
// first image's bytes when the client prefers image/png, else the JSON
// document with each image inline (b64) and its URL.
func (s *Server) sendDiffusion(c echo.Context, id string, d sdcpp.Result) error {
	if prefersPNG(c.Request().Header.Get("Accept")) {
		if len(d.Images) == 0 {
			return apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("job %s has no image", id))
		}
		return s.sendImage(c, id, 0, d.Images[0])
	}
	out := d
	out.Images = make([]sdcpp.Image, 0, len(d.Images))
	for n, im := range d.Images {
		b, err := s.readImage(id, im)
		if err != nil {
			return err
		}
		out.Images = append(out.Images, sdcpp.Image{
			Format: im.Format, B64: base64.StdEncoding.EncodeToString(b), URL: imageURL(id, n),
		})
	}
	return c.JSON(http.StatusOK, out)
}

func imageURL(id string, n int) string { return "/jobs/" + id + "/images/" + strconv.Itoa(n) }

func (s *Server) sendImage(c echo.Context, id string, n int, im sdcpp.Image) error {
	b, err := s.readImage(id, im)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Disposition", fmt.Sprintf(`inline; filename="%s-%d.png"`, id, n))
	return c.Blob(http.StatusOK, "image/png", b)
}

// prefersPNG reports whether an Accept header ranks image/png above
// application/json (a missing or */* header means JSON).
func prefersPNG(accept string) bool {
	png, json := -1.0, -1.0
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		switch mt {
		case "image/png", "image/*":
			png = max(png, q)
		case "application/json":
			json = max(json, q)
		}
	}
	return png > 0 && png >= json
}

// completedResult loads the job of the :id parameter and its stored result;
// 409 not_completed while it is not completed.
func (s *Server) completedResult(c echo.Context) (store.Job, []byte, error) {
	j, err := s.loadJob(c)
	if err != nil {
		return j, nil, err
	}
	if j.State != store.JobStateCompleted {
		msg := "job is " + string(j.State)
		if j.Error != "" {
			msg += ": " + j.Error
		}
		return j, nil, &Error{Status: http.StatusConflict, Code: CodeNotCompleted, Message: msg, Extra: map[string]any{"status": j.State}}
	}
	res, err := s.store.Result(j.ID)
	if errors.Is(err, store.ErrNotFound) { // retention deleted it since loadJob
		return j, nil, apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no job %q", j.ID))
	}
	if err != nil {
		return j, nil, fmt.Errorf("read result %s: %w", j.ID, err)
	}
	return j, res, nil
}

// getImage handles GET /jobs/{id}/images/{n}: the n-th image (from 0) of a
// completed diffusion job, as image/png.
func (s *Server) getImage(c echo.Context) error {
	j, res, err := s.completedResult(c)
	if err != nil {
		return err
	}
	d, ok := asDiffusion(res)
	if !ok {
		return apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("job %s is not a diffusion job; it has no images", j.ID))
	}
	n, ok := imageIndex(c.Param("n"))
	if !ok {
		return apiErr(http.StatusBadRequest, CodeInvalid,
			fmt.Sprintf("image number %q: must be a plain decimal number from 0 (no sign, no leading zeros)", c.Param("n")))
	}
	if n >= len(d.Images) {
		return apiErr(http.StatusNotFound, CodeNotFound,
			fmt.Sprintf("no image %q: job %s has %d image(s), numbered from 0", c.Param("n"), j.ID, len(d.Images)))
	}
	return s.sendImage(c, j.ID, n, d.Images[n])
}

// imageIndex parses an image number in its one canonical form ("0", "12";
// not "00", "+1" or "-0"), so that one image has one URL.
func imageIndex(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// imagesRequest is the body of POST /v1/images/generations: OpenAI's
// fields plus stable-diffusion ones. User, Quality and Style are accepted
// and ignored, as OpenAI clients send them.
type imagesRequest struct {
	Model          string   `json:"model"`
	Prompt         *string  `json:"prompt"`
	N              *int     `json:"n"`
	Size           string   `json:"size"`
	ResponseFormat string   `json:"response_format"`
	OutputFormat   string   `json:"output_format"`
	NegativePrompt string   `json:"negative_prompt"`
	Steps          *int     `json:"steps"`
	CFGScale       *float64 `json:"cfg_scale"`
	Seed           *int64   `json:"seed"`
	SamplingMethod string   `json:"sampling_method"`
	Scheduler      string   `json:"scheduler"`
	Priority       *int     `json:"priority"`
	User           string   `json:"user"`
	Quality        string   `json:"quality"`
	Style          string   `json:"style"`
}

// imagesResponse is OpenAI's answer shape.
type imagesResponse struct {
	Created int64       `json:"created"`
	Data    []imageData `json:"data"`
}

type imageData struct {
	B64JSON string `json:"b64_json,omitempty"`
	URL     string `json:"url,omitempty"`
}

// imagesGenerations handles POST /v1/images/generations: it queues a
// durable diffusion job (as POST /jobs does), waits for it and answers in
// OpenAI's shape. A client that goes away cancels the job. Errors use
// OpenAI's shape too (handleError does that for every /v1/ path).
func (s *Server) imagesGenerations(c echo.Context) error {
	return s.generateImages(c)
}

func (s *Server) generateImages(c echo.Context) error {
	body, err := s.readJSONBody(c, nil)
	if err != nil {
		return err
	}
	var req imagesRequest // the sd path's request; empty when relayed
	job, relayed, err := s.relayedImagesJob(body)
	if err == nil && job == nil {
		if err := decodeBody(body, &req); err != nil {
			return err
		}
		job, err = s.imagesJob(req)
	}
	if err != nil {
		return err
	}
	// Subscribe before the job exists, so its end cannot be missed.
	sub := s.sched.Bus().Subscribe(256)
	defer sub.Close()
	if err := s.queueJob(c, job); err != nil {
		return err
	}
	c.Response().Header().Set("X-Job-Id", job.ID)
	j, err := s.waitFinished(c.Request().Context(), job.ID, sub)
	switch {
	case errors.Is(err, errServerClosing):
		return apiErr(http.StatusServiceUnavailable, CodeShuttingDown,
			fmt.Sprintf("the server is shutting down; job %s stays queued: GET /jobs/%s", job.ID, job.ID))
	case err != nil && c.Request().Context().Err() != nil:
		s.abandon(job)
		return nil // nobody is listening
	case err != nil:
		return err
	}
	if relayed {
		return s.relayedAnswer(c, j)
	}
	return s.imagesAnswer(c, j, req.ResponseFormat)
}

// imagesJob validates an images request and builds its job, through the
// same checks as POST /jobs; error messages name the request's fields.
func (s *Server) imagesJob(req imagesRequest) (*store.Job, error) {
	switch req.ResponseFormat {
	case "", "b64_json", "url":
	default:
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "response_format: must be b64_json or url")
	}
	if req.OutputFormat != "" && req.OutputFormat != "png" {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "output_format: only png is supported")
	}
	if req.Model == "" {
		req.Model = s.onlyDiffusionModel()
	}
	if m, ok := s.resolveModel(req.Model); ok {
		req.Model = m // an alias names its model
	}
	if typ, ok := s.cfg.ModelTypes[req.Model]; ok && typ != engine.KindDiffusion {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, fmt.Sprintf("model: %q is not an image model", req.Model))
	}
	p := sdcpp.Params{
		Steps: req.Steps, CFGScale: req.CFGScale, Seed: req.Seed, Count: req.N,
		NegativePrompt: req.NegativePrompt, SamplingMethod: req.SamplingMethod, Scheduler: req.Scheduler,
	}
	if req.Size != "" && req.Size != "auto" {
		w, h, err := parseSize(req.Size)
		if err != nil {
			return nil, err
		}
		p.Width, p.Height = &w, &h
	}
	params, _ := json.Marshal(p)
	job, err := s.validateSubmit(submitRequest{Model: req.Model, Prompt: req.Prompt, Params: params, Priority: req.Priority})
	var ae *Error
	if errors.As(err, &ae) && ae.Code == CodeInvalid {
		ae.Message = openAIField(ae.Message)
	}
	return job, err
}

// onlyDiffusionModel names the diffusion model when exactly one is
// configured, so that clients may leave "model" out.
func (s *Server) onlyDiffusionModel() string {
	if names := s.diffusionModels(); len(names) == 1 {
		return names[0]
	}
	return ""
}

func parseSize(size string) (int, int, error) {
	ws, hs, ok := strings.Cut(size, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, apiErr(http.StatusBadRequest, CodeInvalid, "size: must be WIDTHxHEIGHT, e.g. 512x512")
	}
	return w, h, nil
}

// openAIField renames the params fields of a validation message to the
// request's: params.width → size, params.count → n, params.steps → steps.
func openAIField(msg string) string {
	field, rest, ok := strings.Cut(msg, ": ")
	if !ok || !strings.HasPrefix(field, "params.") {
		return msg
	}
	switch field {
	case "params.width", "params.height":
		return "size: " + strings.TrimPrefix(field, "params.") + " " + rest
	case "params.count":
		return "n: " + rest
	}
	return strings.TrimPrefix(field, "params.") + ": " + rest
}

// queueJob admits and enqueues job, as POST /jobs does.
func (s *Server) queueJob(c echo.Context, job *store.Job) error {
	ctx := c.Request().Context()
	if err := s.sched.Admit(ctx, job.Model); err != nil {
		return admitError(err)
	}
	if err := s.store.Enqueue(ctx, job); err != nil {
		if errors.Is(err, store.ErrQueueFull) {
			c.Response().Header().Set("Retry-After", "5")
			return apiErr(http.StatusTooManyRequests, CodeQueueFull, "the queue is full (scheduling.max_queue); retry later")
		}
		return fmt.Errorf("enqueue job: %w", err)
	}
	s.sched.Notify(job.Model)
	s.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvJobQueued, Model: job.Model, JobID: job.ID})
	return nil
}

var errServerClosing = errors.New("server closing")

// finishedRecheck is how often a waiting request re-reads its job, in case
// its bus subscription dropped the job's end.
const finishedRecheck = time.Second

// waitFinished waits until job id is completed, failed or cancelled. sub
// must have been subscribed before the job was queued.
func (s *Server) waitFinished(ctx context.Context, id string, sub *scheduler.Subscription) (store.Job, error) {
	tick := time.NewTicker(finishedRecheck)
	defer tick.Stop()
	for {
		j, err := s.store.Get(id)
		if err != nil {
			return j, fmt.Errorf("get job %s: %w", id, err)
		}
		if j.State.Final() {
			return j, nil
		}
		for recheck := false; !recheck; {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					return j, errServerClosing
				}
				recheck = ev.Type == scheduler.EvJobFinished && ev.JobID == id
			case <-tick.C:
				recheck = true
			case <-ctx.Done():
				return j, ctx.Err()
			case <-s.closing:
				return j, errServerClosing
			}
		}
	}
}

// abandon cancels the job of a client that went away.
func (s *Server) abandon(job *store.Job) {
	prev, err := s.store.Cancel(job.ID)
	if err != nil {
		return // finished meanwhile
	}
	s.log.Info("client left; job cancelled", "job_id", job.ID, "model", job.Model, "previous_status", prev)
	switch prev {
	case store.JobStateRunning:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.sched.Cancel(ctx, job.ID); err != nil {
			s.log.Warn("abort running job", "job_id", job.ID, "err", err)
		}
	case store.JobStateQueued:
		s.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: job.Model, JobID: job.ID, State: string(store.JobStateCancelled)})
	}
}

// imagesAnswer builds the OpenAI answer of a finished job.
func (s *Server) imagesAnswer(c echo.Context, j store.Job, format string) error {
	if err := unfinishedError(j); err != nil {
		return err
	}
	res, err := s.store.Result(j.ID)
	if err != nil {
		return fmt.Errorf("read result %s: %w", j.ID, err)
	}
	d, ok := asDiffusion(res)
	if !ok {
		return fmt.Errorf("job %s: result is not a diffusion result", j.ID)
	}
	out := imagesResponse{Created: j.FinishedAt.Unix(), Data: make([]imageData, 0, len(d.Images))}
	for n, im := range d.Images {
		if format == "url" {
			out.Data = append(out.Data, imageData{URL: c.Scheme() + "://" + c.Request().Host + imageURL(j.ID, n)})
			continue
		}
		b, err := s.readImage(j.ID, im)
		if err != nil {
			return err
		}
		out.Data = append(out.Data, imageData{B64JSON: base64.StdEncoding.EncodeToString(b)})
	}
	return c.JSON(http.StatusOK, out)
}

// diffusionModels lists the configured diffusion models, sorted.
func (s *Server) diffusionModels() []string {
	var names []string
	for name, typ := range s.cfg.ModelTypes {
		if typ == engine.KindDiffusion {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
