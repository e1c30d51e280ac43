package api

import (
	"github.com/vramcram/vramcram/engine"

	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/scheduler"
)

// The Ollama API on VramCram's port: /api/* translated onto the same
// scheduler and engines as the OpenAI routes (ollama_chat.go for chat,
// generate and embeddings). Its errors are Ollama's {"error":"message"}
// (doors_errors.go).

// ollamaVersion is the Ollama API version VramCram answers as: clients
// (Open WebUI, the ollama npm client) read /api/version to check that a
// server speaks the API they know.
const ollamaVersion = "0.12.6"

// ModelInfo describes a model's file for model lists (Ollama's /api/tags
// and /api/show); the wiring fills it from the file and its GGUF metadata.
type ModelInfo struct {
	SizeBytes     int64
	ModifiedAt    time.Time
	Format        string // "gguf", "safetensors", …
	Family        string // architecture: "llama", "qwen2", …
	ParameterSize string // "7.6B"
	Quantization  string // "Q4_K_M"
	ContextSize   int
}

// routeOllama registers the Ollama API on e.
func (s *Server) routeOllama(e *echo.Echo) {
	e.HEAD("/", func(c echo.Context) error { return c.NoContent(http.StatusOK) }) // Ollama's liveness probe
	e.GET("/api/version", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"version": ollamaVersion})
	})
	e.HEAD("/api/version", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/api/tags", s.ollamaTags)
	e.GET("/api/ps", s.ollamaPS)
	e.POST("/api/show", s.ollamaShow)
	e.POST("/api/chat", s.ollamaChat)
	e.POST("/api/generate", s.ollamaGenerate)
	e.POST("/api/embed", s.ollamaEmbed)
	e.POST("/api/embeddings", s.ollamaEmbeddings)
	refuse := func(c echo.Context) error {
		return apiErr(http.StatusForbidden, CodeInvalid, fmt.Sprintf(
			"%s is not available: models are managed in VramCram's config (models.llm, models.diffusion), not through the Ollama API", c.Path()))
	}
	for _, p := range []string{"/api/pull", "/api/push", "/api/create", "/api/copy"} {
		e.POST(p, refuse)
	}
	e.DELETE("/api/delete", refuse)
	e.POST("/api/blobs/:digest", refuse)
	e.HEAD("/api/blobs/:digest", refuse)
}

// ollamaModel resolves a model named the Ollama way: a name or alias,
// with or without the ":latest" tag.
func (s *Server) ollamaModel(name string) (string, error) {
	if name == "" {
		return "", apiErr(http.StatusBadRequest, CodeInvalid, "model is required")
	}
	if m, ok := s.resolveModel(name); ok {
		return m, nil
	}
	if m, ok := s.resolveModel(strings.TrimSuffix(name, ":latest")); ok {
		return m, nil
	}
	return "", apiErr(http.StatusNotFound, CodeUnknownModel, fmt.Sprintf("model '%s' not found", name))
}

// ollamaDetails is Ollama's "details" object of a model.
type ollamaDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

type ollamaTag struct {
	Name       string        `json:"name"`
	Model      string        `json:"model"`
	ModifiedAt time.Time     `json:"modified_at"`
	Size       int64         `json:"size"`
	Digest     string        `json:"digest"`
	Details    ollamaDetails `json:"details"`
	// /api/ps only:
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	SizeVRAM  *int64     `json:"size_vram,omitempty"`
}

// ollamaTagOf describes model (listed under name: the model or an alias).
func (s *Server) ollamaTagOf(name, model string) ollamaTag {
	info := s.cfg.ModelInfo[model]
	d := ollamaDetails{Format: info.Format, Family: info.Family, ParameterSize: info.ParameterSize, QuantizationLevel: info.Quantization}
	if d.Family != "" {
		d.Families = []string{d.Family}
	}
	sum := sha256.Sum256([]byte(model))
	mod := info.ModifiedAt
	if mod.IsZero() {
		mod = s.started
	}
	return ollamaTag{Name: name, Model: name, ModifiedAt: mod, Size: info.SizeBytes, Digest: hex.EncodeToString(sum[:]), Details: d}
}

// ollamaNames lists the LLMs and their aliases, sorted, as (name, model).
func (s *Server) ollamaNames() [][2]string {
	var out [][2]string
	for n, typ := range s.cfg.ModelTypes {
		if typ == engine.KindLLM {
			out = append(out, [2]string{n, n})
		}
	}
	for a, m := range s.cfg.Aliases {
		if s.cfg.ModelTypes[m] == engine.KindLLM {
			out = append(out, [2]string{a, m})
		}
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// ollamaTags handles GET /api/tags: the configured LLMs and their aliases.
func (s *Server) ollamaTags(c echo.Context) error {
	models := []ollamaTag{}
	for _, nm := range s.ollamaNames() {
		models = append(models, s.ollamaTagOf(nm[0], nm[1]))
	}
	return c.JSON(http.StatusOK, map[string]any{"models": models})
}

// ollamaPS handles GET /api/ps: the LLMs loaded now.
func (s *Server) ollamaPS(c echo.Context) error {
	snap, err := s.sched.Snapshot(c.Request().Context())
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	models := []ollamaTag{}
	for _, m := range snap.Models {
		if m.Type != "llm" || (m.State != scheduler.ModelReady && m.State != scheduler.ModelBusy) {
			continue
		}
		t := s.ollamaTagOf(m.Name, m.Name)
		vram := int64(max(m.MeasuredMB, m.ReservedMB)) << 20
		expires := s.now().Add(24 * time.Hour) // idle unloading is the scheduler's (ttl_seconds, keep_alive)
		t.SizeVRAM, t.ExpiresAt = &vram, &expires
		if t.Size == 0 {
			t.Size = vram
		}
		models = append(models, t)
	}
	return c.JSON(http.StatusOK, map[string]any{"models": models})
}

// ollamaShow handles POST /api/show {"model"} (or the older {"name"}).
func (s *Server) ollamaShow(c echo.Context) error {
	var req struct {
		Model   string `json:"model"`
		Name    string `json:"name"`
		Verbose bool   `json:"verbose"`
	}
	body, err := s.readJSONBody(c, nil)
	if err != nil {
		return err
	}
	if err := decodeJSON(body, &req, false); err != nil {
		return err
	}
	if req.Model == "" {
		req.Model = req.Name
	}
	model, err := s.ollamaModel(req.Model)
	if err != nil {
		return err
	}
	if s.cfg.ModelTypes[model] != engine.KindLLM {
		return apiErr(http.StatusBadRequest, CodeWrongModel, fmt.Sprintf("model '%s' is not a language model", req.Model))
	}
	t := s.ollamaTagOf(req.Model, model)
	info := s.cfg.ModelInfo[model]
	caps := []string{"completion", "tools"}
	if s.cfg.Embeddings[model] {
		caps = append(caps, "embedding")
	}
	modelInfo := map[string]any{"general.architecture": info.Family}
	if info.Family != "" && info.ContextSize > 0 {
		modelInfo[info.Family+".context_length"] = info.ContextSize
	}
	return c.JSON(http.StatusOK, map[string]any{
		"modelfile":    fmt.Sprintf("# served by VramCram as %s; configured in its models.llm\n", model),
		"parameters":   "",
		"template":     "{{ .Prompt }}", // the engine applies the model's own chat template
		"details":      t.Details,
		"model_info":   modelInfo,
		"capabilities": caps,
		"modified_at":  t.ModifiedAt,
	})
}
