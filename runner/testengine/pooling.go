package main

import (
	"encoding/json"
	"fmt"
	"net/http"

	gguf "github.com/gpustack/gguf-parser-go"
)

// modelPooling is the pooling the server runs with: --pooling, else the
// GGUF's own "<arch>.pooling_type", else none (a stand-in model file, or a
// GGUF made for generation).
func modelPooling(o options) string {
	if o.pooling != "" {
		return o.pooling
	}
	if o.model == "" {
		return "none"
	}
	return ggufPooling(o.model)
}

func ggufPooling(path string) (name string) {
	defer func() {
		if recover() != nil {
			name = "none"
		}
	}()
	gf, err := gguf.ParseGGUFFile(path, gguf.SkipLargeMetadata())
	if err != nil {
		return "none"
	}
	arch, ok := gf.Header.MetadataKV.Get("general.architecture")
	if !ok {
		return "none"
	}
	kv, ok := gf.Header.MetadataKV.Get(arch.ValueString() + ".pooling_type")
	if !ok {
		return "none"
	}
	names := []string{"none", "mean", "cls", "last", "rank"}
	if v := int(kv.ValueUint32()); v < len(names) {
		return names[v]
	}
	return "none"
}

// embeddingInputs reads an embeddings request the way llama-server does:
// "input" (the OpenAI field) or "content" (its own, not OpenAI
// compatible). It writes the error answer itself and then reports false.
func (s *server) embeddingInputs(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	var body struct {
		Input   json.RawMessage `json:"input"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", fmt.Sprintf("%v: %v", errParse, err))
		return nil, false
	}
	oai := r.URL.Path == "/v1/embeddings" // /embedding and /embeddings are its own routes
	raw := body.Input
	if raw == nil {
		raw, oai = body.Content, false
	}
	// The OpenAI shape needs one vector per input, which pooling none
	// (one per token) cannot give; checked before the body, as the real
	// server does.
	if oai && s.pooling == "none" {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			"Pooling type 'none' is not OAI compatible. Please use a different pooling type")
		return nil, false
	}
	inputs, ok := stringOrList(raw)
	if !ok || len(inputs) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "\"input\" or \"content\" must be provided")
		return nil, false
	}
	// An embedding is computed in one physical batch, and must fit a slot.
	for _, in := range inputs {
		n := promptTokens(in) + 1 // the BOS token
		if n > s.o.ubatch {
			writeError(w, http.StatusInternalServerError, "server_error", fmt.Sprintf(
				"input (%d tokens) is too large to process. increase the physical batch size (current batch size: %d)", n, s.o.ubatch))
			return nil, false
		}
		if nCtx := s.o.slotCtx(); n > nCtx {
			writeContextError(w, fmt.Sprintf("input (%d tokens) is larger than the max context size (%d tokens). skipping", n, nCtx), n, nCtx)
			return nil, false
		}
	}
	return inputs, true
}
