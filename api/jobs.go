package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/engine"
	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/engine/sdcpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// ModelKinds maps each model name to its kind.
type ModelKinds map[string]engine.Kind

// submitRequest is the body of POST /jobs.
type submitRequest struct {
	Model    string          `json:"model"`
	Prompt   *string         `json:"prompt"`
	Params   json.RawMessage `json:"params"`
	Priority *int            `json:"priority"`
	// Endpoint and Body make a durable OpenAI request instead of a prompt:
	// Body is POSTed to Endpoint of the model's engine and the job's result
	// is the engine's JSON answer.
	Endpoint *string         `json:"endpoint"`
	Body     json.RawMessage `json:"body"`
}

// readJSON reads a body of at most MaxBodyBytes and decodes it strictly into v.
func (s *Server) readJSON(c echo.Context, v any) error {
	body, err := s.readJSONBody(c, nil)
	if err != nil {
		return err
	}
	return decodeBody(body, v)
}

// readJSONBody reads a JSON body (requireJSON) of at most MaxBodyBytes, appending it to buf.
// The buffer grows with the bytes that arrive, never from the declared
// Content-Length: a client that declares 1 MiB and sends one byte costs
// one byte, until the body's idle timeout closes it.
func (s *Server) readJSONBody(c echo.Context, buf []byte) ([]byte, error) {
	if err := requireJSON(c.Request()); err != nil {
		return nil, err
	}
	return s.readBody(c, buf)
}

// readBody reads a body of any type (multipart forms, /upstream) under the
// body limits.
func (s *Server) readBody(c echo.Context, buf []byte) ([]byte, error) {
	r := http.MaxBytesReader(c.Response(), c.Request().Body, s.cfg.MaxBodyBytes)
	body, err := readAll(r, buf)
	if err != nil {
		if ae, ok := s.bodyReadError(c.Response(), err); ok {
			return nil, ae
		}
		return nil, apiErr(http.StatusBadRequest, CodeInvalidJSON, "cannot read request body")
	}
	return body, nil
}

// readAll is io.ReadAll appending to buf.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 512)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// decodeBody decodes one JSON object, rejecting unknown fields and trailing
// data; errors name the field.
func decodeBody(body []byte, v any) error { return decodeJSON(body, v, true) }

// decodeJSON decodes one JSON object, rejecting trailing data and, if strict,
// unknown fields; errors name the field.
func decodeJSON(body []byte, v any, strict bool) error {
	if !utf8.Valid(body) {
		return apiErr(http.StatusBadRequest, CodeInvalidJSON, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Param: te.Field,
				Message: fmt.Sprintf("%s: wrong type (got JSON %s)", te.Field, te.Value)}
		case errors.As(err, &te):
			return apiErr(http.StatusBadRequest, CodeInvalidJSON, "request body must be a JSON object")
		case errors.As(err, &se):
			return apiErr(http.StatusBadRequest, CodeInvalidJSON, fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err))
		case errors.Is(err, io.EOF):
			return apiErr(http.StatusBadRequest, CodeInvalidJSON, "request body is empty; expected a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return apiErr(http.StatusBadRequest, CodeInvalid, name+": unknown field")
		}
		return apiErr(http.StatusBadRequest, CodeInvalidJSON, "malformed JSON: "+err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apiErr(http.StatusBadRequest, CodeInvalidJSON, "unexpected data after the JSON object")
	}
	return nil
}

// validateSubmit checks a decoded submit request and returns the job to queue.
func (s *Server) validateSubmit(req submitRequest) (*store.Job, error) {
	if req.Model == "" {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "model: required")
	}
	if m, ok := s.resolveModel(req.Model); ok {
		req.Model = m // an alias names its model
	}
	typ, ok := s.cfg.ModelTypes[req.Model]
	if !ok {
		return nil, s.unknownModel(req.Model)
	}
	if req.Endpoint != nil || req.Body != nil {
		return s.validateEndpointJob(req, typ)
	}
	if req.Prompt == nil || strings.TrimSpace(*req.Prompt) == "" {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "prompt: required, a non-empty string (or endpoint and body)")
	}
	if err := s.checkChars("prompt", utf8.RuneCountInString(*req.Prompt)); err != nil {
		return nil, err
	}
	prio, err := priority(req.Priority)
	if err != nil {
		return nil, err
	}
	if typ == engine.KindDiffusion { // the prompt alone, also when params are absent
		if err := s.checkDiffusionText(req.Model, *req.Prompt, ""); err != nil {
			return nil, err
		}
	}
	params := req.Params
	if p := bytes.TrimSpace(params); len(p) == 0 || bytes.Equal(p, []byte("null")) {
		params = nil // no params: nothing to parse or normalise
	} else if typ == engine.KindLLM {
		p, err := llamacpp.ParseParams(req.Params)
		if err != nil {
			return nil, apiErr(http.StatusBadRequest, CodeInvalid, err.Error())
		}
		params, _ = json.Marshal(p) // normalised: only known fields are stored
		if string(params) == "{}" {
			params = nil
		}
	} else if typ == engine.KindDiffusion {
		p, err := sdcpp.ParseParams(req.Params)
		if err != nil {
			return nil, apiErr(http.StatusBadRequest, CodeInvalid, err.Error())
		}
		if err := s.checkDiffusionText(req.Model, *req.Prompt, p.NegativePrompt); err != nil {
			return nil, err
		}
		params, _ = json.Marshal(p) // normalised, as for LLMs
		if string(params) == "{}" {
			params = nil
		}
	} else if p := bytes.TrimSpace(params); len(p) > 0 {
		// Other engines read their params later; at the trust boundary they
		// must at least be an object, as for LLMs.
		switch {
		case bytes.Equal(p, []byte("null")):
			params = nil
		case p[0] != '{':
			return nil, apiErr(http.StatusBadRequest, CodeInvalid, "params: must be a JSON object")
		}
	}
	return &store.Job{
		ID: store.NewID(), Model: req.Model, Type: string(typ), Prompt: *req.Prompt,
		Params: params, Priority: prio, MaxAttempts: s.cfg.MaxAttempts,
	}, nil
}

// priority checks a submitted priority; nil is 0.
func priority(p *int) (int, error) {
	if p == nil {
		return 0, nil
	}
	if *p < store.MinPriority || *p > store.MaxPriority {
		return 0, apiErr(http.StatusBadRequest, CodeInvalid,
			fmt.Sprintf("priority: must be between %d and %d", store.MinPriority, store.MaxPriority))
	}
	return *p, nil
}

// validateEndpointJob checks a durable OpenAI request: an endpoint the
// model's engine serves, and a JSON object body that does not ask for a
// stream (the job stores one answer).
func (s *Server) validateEndpointJob(req submitRequest, typ engine.Kind) (*store.Job, error) {
	switch {
	case req.Prompt != nil || len(req.Params) > 0:
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "prompt, params: not allowed with endpoint and body")
	case req.Endpoint == nil || *req.Endpoint == "":
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "endpoint: required with body, an OpenAI path such as /v1/chat/completions")
	}
	served := s.cfg.Endpoints[req.Model]
	if !slices.Contains(served, *req.Endpoint) {
		msg := fmt.Sprintf("endpoint: model %q does not serve %q", req.Model, *req.Endpoint)
		if len(served) > 0 {
			msg += "; it serves " + strings.Join(served, ", ")
		} else {
			msg += "; its engine takes prompt jobs only"
		}
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, msg)
	}
	var body map[string]json.RawMessage
	if b := bytes.TrimSpace(req.Body); len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &body) != nil {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "body: required, a JSON object (the OpenAI request)")
	}
	if st, ok := body["stream"]; ok && string(bytes.TrimSpace(st)) != "false" && string(bytes.TrimSpace(st)) != "null" {
		return nil, apiErr(http.StatusBadRequest, CodeInvalid, "body.stream: a durable job stores one answer; leave stream out (follow the job with GET /jobs/{id}/stream)")
	}
	prio, err := priority(req.Priority)
	if err != nil {
		return nil, err
	}
	return &store.Job{
		ID: store.NewID(), Model: req.Model, Type: string(typ), Endpoint: *req.Endpoint, Body: req.Body,
		Priority: prio, MaxAttempts: s.cfg.MaxAttempts,
	}, nil
}

func (s *Server) unknownModel(name string) *Error {
	names := make([]string, 0, len(s.cfg.ModelTypes))
	for n := range s.cfg.ModelTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return apiErr(http.StatusNotFound, CodeUnknownModel,
		fmt.Sprintf("model: unknown model %q; configured models: %s", name, strings.Join(names, ", ")))
}

// submit handles POST /jobs: 202 once the job is on disk.
func (s *Server) submit(c echo.Context) error {
	var req submitRequest
	if err := s.readJSON(c, &req); err != nil {
		return err
	}
	job, err := s.enqueue(c.Request().Context(), req)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && ae.Code == CodeQueueFull {
			c.Response().Header().Set("Retry-After", "5")
		}
		return err
	}
	c.Response().Header()["Location"] = []string{"/jobs/" + job.ID}
	if c.Request().URL.RawQuery != "" { // ?pretty: echo indents
		return c.JSON(http.StatusAccepted, wire.Accepted{JobID: job.ID, Status: string(store.JobStateQueued)})
	}
	return c.JSONBlob(http.StatusAccepted, acceptedBody(job.ID))
}

// acceptedBody is the answer to an accepted submit, byte for byte what
// c.JSON writes for wire.Accepted{id, "queued"} (keys sorted, a
// newline after), without the encoder and the map on the busiest path. A
// server-made ID needs no escaping (store.ValidID).
func acceptedBody(id string) []byte {
	const head, tail = `{"job_id":"`, `","status":"` + string(store.JobStateQueued) + "\"}\n"
	b := make([]byte, 0, len(head)+len(id)+len(tail))
	return append(append(append(b, head...), id...), tail...)
}

// enqueue checks a submission and queues its job (POST /jobs and /ws).
func (s *Server) enqueue(ctx context.Context, req submitRequest) (*store.Job, error) {
	job, err := s.validateSubmit(req)
	if err != nil {
		return nil, err
	}
	if err := s.sched.Admit(ctx, job.Model); err != nil {
		return nil, admitError(err)
	}
	if err := s.store.Enqueue(ctx, job); err != nil {
		if errors.Is(err, store.ErrQueueFull) {
			return nil, apiErr(http.StatusTooManyRequests, CodeQueueFull, "the queue is full (scheduling.max_queue); retry later")
		}
		return nil, fmt.Errorf("enqueue job: %w", err)
	}
	s.sched.Notify(job.Model)
	s.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvJobQueued, Model: job.Model, JobID: job.ID})
	return job, nil
}

func admitError(err error) error {
	switch {
	case errors.Is(err, scheduler.ErrUnknownModel):
		return apiErr(http.StatusNotFound, CodeUnknownModel, "model: "+err.Error())
	case errors.Is(err, scheduler.ErrUnavailable):
		return apiErr(http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	case errors.Is(err, scheduler.ErrTooLarge):
		return apiErr(http.StatusUnprocessableEntity, CodeTooLarge, err.Error())
	case errors.Is(err, scheduler.ErrStopped):
		return apiErr(http.StatusServiceUnavailable, CodeShuttingDown, "the server is shutting down")
	case errors.Is(err, store.ErrQueueFull): // jobs and interactive requests waiting
		return apiErr(http.StatusTooManyRequests, CodeQueueFull, "the queue is full (scheduling.max_queue); retry later")
	}
	return err
}

// loadJob fetches the job named by the :id path parameter.
func (s *Server) loadJob(c echo.Context) (store.Job, error) { return s.jobByID(c.Param("id")) }

// jobByID fetches a job; an unknown or malformed id is a 404.
func (s *Server) jobByID(id string) (store.Job, error) {
	if !store.ValidID(id) {
		return store.Job{}, apiErr(http.StatusNotFound, CodeNotFound, "no job with that id")
	}
	j, err := s.store.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		return j, apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no job %q", id))
	}
	if err != nil {
		return j, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

func (s *Server) view(ctx context.Context, j store.Job) wire.Job {
	return s.viewWith(ctx, j, s.snapshotOnce(ctx))
}

// snapshotOnce returns a func that takes the scheduler's snapshot on its
// first call only: a page of jobs costs one snapshot, not one per job.
func (s *Server) snapshotOnce(ctx context.Context) func() *scheduler.Snapshot {
	var snap *scheduler.Snapshot
	done := false
	return func() *scheduler.Snapshot {
		if !done {
			done = true
			if sn, err := s.sched.Snapshot(ctx); err == nil {
				snap = &sn
			}
		}
		return snap
	}
}

// viewWith is view with a shared snapshot source (for ETAs).
func (s *Server) viewWith(ctx context.Context, j store.Job, snap func() *scheduler.Snapshot) wire.Job {
	v := wire.Job{
		JobID: j.ID, Status: string(j.State), Model: j.Model, Type: j.Type, Endpoint: j.Endpoint, Priority: j.Priority,
		Attempts: j.Attempts, MaxAttempts: j.MaxAttempts, Error: j.Error, CreatedAt: j.CreatedAt,
	}
	if !j.StartedAt.IsZero() {
		v.StartedAt = &j.StartedAt
	}
	if !j.FinishedAt.IsZero() {
		v.FinishedAt = &j.FinishedAt
	}
	switch j.State {
	case store.JobStateQueued:
		if pos, err := s.store.Position(j.ID); err == nil {
			v.QueuePosition = &pos
			v.ETASeconds = eta(snap(), j.Model, pos)
		}
	case store.JobStateRunning:
		if p, ok, err := s.sched.JobProgress(ctx, j.ID); err == nil && ok {
			v.Progress = &p
		}
	}
	return v
}

// getJob handles GET /jobs/{id}.
func (s *Server) getJob(c echo.Context) error {
	j, err := s.loadJob(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.view(c.Request().Context(), j))
}

// getResult handles GET /jobs/{id}/result: the stored result, or 409 with the
// job's status while it is not completed.
func (s *Server) getResult(c echo.Context) error {
	j, res, err := s.completedResult(c)
	if err != nil {
		return err
	}
	if d, ok := asDiffusion(res); ok {
		return s.sendDiffusion(c, j.ID, d) // images are files; see images.go
	}
	return c.JSONBlob(http.StatusOK, res)
}

// cancelJob handles DELETE /jobs/{id}.
func (s *Server) cancelJob(c echo.Context) error {
	prev, err := s.cancel(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, wire.Cancelled{JobID: c.Param("id"), Status: string(store.JobStateCancelled), PreviousStatus: string(prev)})
}

// cancel cancels a queued or running job (DELETE /jobs/{id} and /ws) and
// returns its previous state.
func (s *Server) cancel(ctx context.Context, id string) (store.JobState, error) {
	j, err := s.jobByID(id)
	if err != nil {
		return "", err
	}
	prev, err := s.store.Cancel(j.ID)
	if errors.Is(err, store.ErrNotFound) { // retention deleted it since jobByID
		return "", apiErr(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no job %q", j.ID))
	}
	if errors.Is(err, store.ErrStateConflict) {
		cur, _ := s.store.Get(j.ID)
		return "", &Error{Status: http.StatusConflict, Code: CodeFinished, Message: "job already " + string(cur.State),
			Extra: map[string]any{"status": cur.State}}
	}
	if err != nil {
		return "", fmt.Errorf("cancel job %s: %w", j.ID, err)
	}
	if prev == store.JobStateRunning {
		if _, err := s.sched.Cancel(ctx, j.ID); err != nil {
			s.log.Warn("abort running job", "job_id", j.ID, "err", err)
		}
	}
	if prev == store.JobStateQueued {
		// A running job's slot reports its own end when the engine call returns.
		s.sched.Bus().Publish(scheduler.Event{Type: scheduler.EvJobFinished, Model: j.Model, JobID: j.ID, State: string(store.JobStateCancelled)})
	}
	return prev, nil
}

// listJobs handles GET /jobs?model=&state=&limit=: newest first.
func (s *Server) listJobs(c echo.Context) error {
	f := store.ListFilter{Model: c.QueryParam("model"), Limit: 50}
	if st := c.QueryParam("state"); st != "" {
		if !slices.Contains(store.JobStates(), store.JobState(st)) {
			return apiErr(http.StatusBadRequest, CodeInvalid, "state: must be one of queued, running, completed, failed, cancelled")
		}
		f.State = store.JobState(st)
	}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return apiErr(http.StatusBadRequest, CodeInvalid, "limit: must be an integer between 1 and 1000")
		}
		f.Limit = n
	}
	jobs, err := s.store.List(f)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	out := make([]wire.Job, 0, len(jobs))
	snap := s.snapshotOnce(c.Request().Context())
	for _, j := range jobs {
		out = append(out, s.viewWith(c.Request().Context(), j, snap))
	}
	return c.JSON(http.StatusOK, map[string]any{"jobs": out})
}

// eta estimates a queued job's time to completion from the scheduler's
// figures for its model, rounded to a tenth of a second.
func eta(snap *scheduler.Snapshot, model string, position int) *float64 {
	if snap == nil {
		return nil
	}
	for _, m := range snap.Models {
		if m.Name == model {
			if eta, ok := m.ETA(position); ok {
				eta = math.Round(eta*10) / 10
				return &eta
			}
		}
	}
	return nil
}
