package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// llama-server's utility routes (tools/server/server-context.cpp), in its
// request and response shapes. The stand-in's tokenizer is byte-level: each
// byte of the text is one token whose id is the byte's value, so /detokenize
// inverts /tokenize exactly. Token counts of the generation routes stay
// word counts (see the package doc).

// routeTools registers the utility routes on s.
func (s *server) routeTools() {
	s.mux.HandleFunc("POST /tokenize", s.tokenize)
	s.mux.HandleFunc("POST /detokenize", s.detokenize)
	s.mux.HandleFunc("POST /apply-template", s.applyTemplate)
	for _, p := range []string{"/v1/messages/count_tokens", "/v1/chat/completions/input_tokens",
		"/chat/completions/input_tokens", "/v1/responses/input_tokens", "/responses/input_tokens"} {
		s.mux.HandleFunc("POST "+p, s.countTokens(p))
	}
	for _, p := range []string{"/rerank", "/reranking", "/v1/rerank", "/v1/reranking"} {
		s.mux.HandleFunc("POST "+p, s.rerank)
	}
	s.mux.HandleFunc("POST /v1/audio/transcriptions", s.transcribe)
	s.mux.HandleFunc("POST /audio/transcriptions", s.transcribe)
	s.mux.HandleFunc("GET /props", s.props)
	s.mux.HandleFunc("POST /props", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotImplemented, "not_supported_error",
			"This server does not support changing global properties. Start it with `--props`")
	})
	s.mux.HandleFunc("GET /slots", s.slotsInfo)
	s.mux.HandleFunc("GET /lora-adapters", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []any{})
	})
	s.mux.HandleFunc("POST /lora-adapters", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []any{})
	})
}

// decodeBody decodes a JSON body, answering llama-server's 500 on a parse
// error (it lets the JSON exception escape to its generic handler).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "[json.exception.parse_error] "+err.Error())
		return false
	}
	return true
}

func (s *server) tokenize(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Content    *string `json:"content"`
		WithPieces bool    `json:"with_pieces"`
	}
	if !decodeBody(w, r, &b) {
		return
	}
	tokens := []any{}
	if b.Content != nil {
		for _, c := range []byte(*b.Content) {
			if !b.WithPieces {
				tokens = append(tokens, int(c))
				continue
			}
			var piece any = string([]byte{c})
			if !utf8.Valid([]byte{c}) {
				piece = []int{int(c)} // not valid UTF-8: the bytes, as llama-server sends them
			}
			tokens = append(tokens, map[string]any{"id": int(c), "piece": piece})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": tokens})
}

func (s *server) detokenize(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Tokens []int `json:"tokens"`
	}
	if !decodeBody(w, r, &b) {
		return
	}
	out := make([]byte, 0, len(b.Tokens))
	for _, t := range b.Tokens {
		if t >= 0 && t < 256 {
			out = append(out, byte(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"content": string(out)})
}

// chatTemplate renders messages with the stand-in's fixed template.
func chatTemplate(msgs []struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}) string {
	var sb strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&sb, "<|%s|>\n%s\n", m.Role, messageText(m.Content))
	}
	sb.WriteString("<|assistant|>\n")
	return sb.String()
}

func (s *server) applyTemplate(w http.ResponseWriter, r *http.Request) {
	var b requestBody
	if !decodeBody(w, r, &b) {
		return
	}
	if len(b.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "'messages' is required")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"prompt": chatTemplate(b.Messages)})
}

// countTokens answers the token-counting routes: the word count of the
// prompt that the matching generation route would see.
func (s *server) countTokens(path string) http.HandlerFunc {
	k := kindChat
	switch {
	case strings.HasPrefix(path, "/v1/messages"):
		k = kindAnthropic
	case strings.Contains(path, "responses"):
		k = kindResponses
	}
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := parseGenRequest(k, r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
			return
		}
		v := map[string]any{"input_tokens": len(strings.Fields(req.prompt))}
		if k != kindAnthropic {
			v["object"] = "response.input_tokens"
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// rerank scores each document by the share of the query's words it
// contains (Jina's answer shape; TEI's with "texts").
func (s *server) rerank(w http.ResponseWriter, r *http.Request) {
	if !s.o.reranking {
		writeError(w, http.StatusNotImplemented, "not_supported_error",
			"This server does not support reranking. Start it with `--reranking`")
		return
	}
	var b struct {
		Model      *string  `json:"model"`
		Query      *string  `json:"query"`
		Documents  []string `json:"documents"`
		Texts      []string `json:"texts"`
		TopN       *int     `json:"top_n"`
		ReturnText bool     `json:"return_text"`
	}
	if !decodeBody(w, r, &b) {
		return
	}
	tei := b.Texts != nil
	docs := b.Documents
	if docs == nil {
		docs = b.Texts
	}
	switch {
	case b.Query == nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "\"query\" must be provided")
		return
	case len(docs) == 0:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "\"documents\" must be a non-empty string array")
		return
	}
	label := "relevance_score"
	if tei {
		label = "score"
	}
	query := strings.Fields(strings.ToLower(*b.Query))
	results := make([]map[string]any, len(docs))
	n := 0
	for i, d := range docs {
		words := strings.Fields(strings.ToLower(d))
		hits := 0
		for _, q := range query {
			if slices.Contains(words, q) {
				hits++
			}
		}
		score := 0.0
		if len(query) > 0 {
			score = float64(hits) / float64(len(query))
		}
		results[i] = map[string]any{"index": i, label: score}
		if tei && b.ReturnText {
			results[i]["text"] = d
		}
		n += len(query) + len(words)
	}
	slices.SortStableFunc(results, func(a, b map[string]any) int {
		x, y := a[label].(float64), b[label].(float64)
		switch {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	})
	if b.TopN != nil && *b.TopN < len(results) {
		results = results[:max(*b.TopN, 0)]
	}
	if tei {
		writeJSON(w, http.StatusOK, results)
		return
	}
	model := s.model
	if b.Model != nil {
		model = *b.Model // llama-server echoes the request's model
	}
	writeJSON(w, http.StatusOK, map[string]any{"model": model, "object": "list",
		"usage": map[string]any{"prompt_tokens": n, "total_tokens": n}, "results": results})
}

// transcribe answers a multipart transcription request: the "transcript"
// names the uploaded file and its size (the stand-in hears nothing).
func (s *server) transcribe(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "multipart form: "+err.Error())
		return
	}
	f, hdr, err := r.FormFile("file")
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "\"file\" is required")
		return
	}
	defer f.Close()
	n, _ := io.Copy(io.Discard, f)
	text := fmt.Sprintf("transcript of %s (%d bytes)", hdr.Filename, n)
	writeJSON(w, http.StatusOK, map[string]any{"type": "transcript.text.done", "text": text,
		"usage": map[string]any{"type": "tokens", "input_tokens": n, "output_tokens": len(strings.Fields(text)),
			"total_tokens": int(n) + len(strings.Fields(text)), "input_tokens_details": map[string]any{"cached_tokens": 0}}})
}

func (s *server) props(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"default_generation_settings": map[string]any{"params": map[string]any{"n_predict": -1, "temperature": 0.8}, "n_ctx": max(s.o.ctxSize, 4096)},
		"total_slots":                 s.o.parallel,
		"model_alias":                 s.model,
		"model_path":                  s.o.model,
		"modalities":                  map[string]any{"vision": false, "video": false, "audio": false},
		"endpoint_slots":              true,
		"endpoint_props":              false,
		"endpoint_metrics":            s.o.metrics,
		"chat_template":               "{# testengine: <|role|> content #}",
		"bos_token":                   "<s>",
		"eos_token":                   "</s>",
		"build_info":                  "b0-testengine",
		"is_sleeping":                 false,
	})
}

func (s *server) slotsInfo(w http.ResponseWriter, r *http.Request) {
	busy := s.o.parallel - len(s.slots)
	if r.URL.Query().Get("fail_on_no_slot") != "" && busy >= s.o.parallel {
		writeError(w, http.StatusServiceUnavailable, "unavailable_error", "no slot available")
		return
	}
	out := make([]any, s.o.parallel)
	for i := range out {
		out[i] = map[string]any{"id": i, "n_ctx": max(s.o.ctxSize, 4096), "is_processing": i < busy}
	}
	writeJSON(w, http.StatusOK, out)
}
