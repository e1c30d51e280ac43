package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// maxEmbeddingAnswer bounds an engine's embeddings answer read by the
// Ollama door.
const maxEmbeddingAnswer = 64 << 20

// ollamaEmbed handles POST /api/embed {"model","input": string | [string]}.
func (s *Server) ollamaEmbed(c echo.Context) error {
	var req struct {
		ollamaCommon
		Input      json.RawMessage `json:"input"`
		Dimensions int             `json:"dimensions"`
	}
	x, err := s.ollamaStart(c, &req, &req.ollamaCommon)
	if err != nil {
		return err
	}
	if err := checkTexts("input", req.Input); err != nil {
		return apiErr(http.StatusBadRequest, CodeInvalid, err.(*Error).Message)
	}
	if err := s.checkChars("input", textChars(req.Input)); err != nil {
		return err
	}
	body := map[string]any{"model": x.name, "input": req.Input, "encoding_format": "float"}
	if req.Dimensions > 0 {
		body["dimensions"] = req.Dimensions
	}
	return s.ollamaEmbedOn(c, x, body, func(vecs [][]float64, promptN int, load time.Duration) any {
		return map[string]any{"model": x.name, "embeddings": vecs, "total_duration": int64(s.now().Sub(x.start)),
			"load_duration": int64(load), "prompt_eval_count": promptN}
	})
}

// ollamaEmbeddings handles the older POST /api/embeddings {"model","prompt"}.
func (s *Server) ollamaEmbeddings(c echo.Context) error {
	var req struct {
		ollamaCommon
		Prompt string `json:"prompt"`
	}
	x, err := s.ollamaStart(c, &req, &req.ollamaCommon)
	if err != nil {
		return err
	}
	if req.Prompt == "" {
		return apiErr(http.StatusBadRequest, CodeInvalid, "prompt is required")
	}
	if err := s.checkChars("prompt", utf8.RuneCountInString(req.Prompt)); err != nil {
		return err
	}
	body := map[string]any{"model": x.name, "input": req.Prompt, "encoding_format": "float"}
	return s.ollamaEmbedOn(c, x, body, func(vecs [][]float64, _ int, _ time.Duration) any {
		return map[string]any{"embedding": vecs[0]}
	})
}

// ollamaEmbedOn asks the engine's /v1/embeddings and answers answer(…).
func (s *Server) ollamaEmbedOn(c echo.Context, x ollamaCall, body map[string]any, answer func([][]float64, int, time.Duration) any) error {
	if !s.cfg.Embeddings[x.model] {
		return apiErr(http.StatusBadRequest, CodeWrongModel,
			fmt.Sprintf("model '%s' does not serve embeddings (set models.llm[].config.embeddings: true)", x.name))
	}
	if s.serveRemote(c, x.model, x.raw) {
		return nil
	}
	x.path = "/v1/embeddings"
	return s.withEngine(c, x, body, func(resp *http.Response, load time.Duration) error {
		var out struct {
			Data []struct {
				Embedding []float64 `json:"embedding"`
				Index     int       `json:"index"`
			} `json:"data"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxEmbeddingAnswer))
		if err != nil {
			return fmt.Errorf("read engine answer: %w", err)
		}
		if err := json.Unmarshal(b, &out); err != nil || len(out.Data) == 0 {
			return &Error{Status: http.StatusBadGateway, Code: CodeEngineFailed, Message: "the engine's embeddings answer could not be read"}
		}
		vecs := make([][]float64, len(out.Data))
		for k, d := range out.Data {
			if d.Index >= 0 && d.Index < len(vecs) {
				vecs[d.Index] = d.Embedding
			} else {
				vecs[k] = d.Embedding
			}
		}
		return c.JSON(http.StatusOK, answer(vecs, out.Usage.PromptTokens, load))
	})
}
