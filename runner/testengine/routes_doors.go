package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Anthropic's /v1/messages and OpenAI's /v1/responses, in the shapes
// llama-server writes them (tools/server/server-task.cpp: to_json_anthropic*,
// to_json_oaicompat_resp*). The generation rule is the same as for chat:
// the prompt is the system text and the message texts joined by "\n".

// doorFields are the request fields of /v1/messages, /v1/responses and
// /infill that the other routes do not have.
type doorFields struct {
	System          json.RawMessage `json:"system"`         // Anthropic: a string or text blocks
	StopSequences   []string        `json:"stop_sequences"` // Anthropic
	Input           json.RawMessage `json:"input"`          // Responses: a string or items
	Instructions    string          `json:"instructions"`   // Responses
	MaxOutputTokens *int            `json:"max_output_tokens"`
	InputPrefix     *string         `json:"input_prefix"` // infill
	InputSuffix     *string         `json:"input_suffix"` // infill
}

// doorPrompt builds the prompt of a /v1/messages, /v1/responses or /infill
// request.
func doorPrompt(k kind, b requestBody) (string, error) {
	var parts []string
	switch k {
	case kindAnthropic:
		if len(b.Messages) == 0 {
			return "", fmt.Errorf("'messages' is required")
		}
		if s := partsText(b.System); s != "" {
			parts = append(parts, s)
		}
		for _, m := range b.Messages {
			parts = append(parts, partsText(m.Content))
		}
	case kindResponses:
		if b.Instructions != "" {
			parts = append(parts, b.Instructions)
		}
		var one string
		if json.Unmarshal(b.Input, &one) == nil {
			parts = append(parts, one)
			break
		}
		var items []struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(b.Input, &items) != nil || len(items) == 0 {
			return "", fmt.Errorf("'input' is required")
		}
		for _, it := range items {
			parts = append(parts, partsText(it.Content))
		}
	case kindInfill:
		if b.InputPrefix == nil {
			return "", fmt.Errorf("\"input_prefix\" is required")
		}
		if b.InputSuffix == nil {
			return "", fmt.Errorf("\"input_suffix\" is required")
		}
		var p string
		_ = json.Unmarshal(b.Prompt, &p)
		parts = append(parts, *b.InputPrefix, p, *b.InputSuffix)
	}
	return strings.Join(parts, "\n"), nil
}

// partsText reads a content that is a string or an array of text parts
// ("text", "input_text" or "output_text").
func partsText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var ps []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &ps) != nil {
		return ""
	}
	var texts []string
	for _, p := range ps {
		switch p.Type {
		case "text", "input_text", "output_text":
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// toolCall is the stand-in's answer to a chat request with tools: a call of
// the first tool whose arguments carry the "tools" field exactly as it
// arrived, so that a test sees what reached the engine. nil without tools.
func toolCall(tools json.RawMessage) map[string]any {
	var list []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(tools, &list) != nil || len(list) == 0 {
		return nil
	}
	var compact bytes.Buffer
	if json.Compact(&compact, tools) != nil {
		return nil
	}
	return map[string]any{
		"id": "call_test0", "type": "function",
		"function": map[string]any{"name": list[0].Function.Name, "arguments": `{"tools":` + compact.String() + `}`},
	}
}

// named writes one server-sent event with an event name, as llama-server
// formats Anthropic and Responses streams.
func (rp *responder) named(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(rp.w, "event: %s\ndata: %s\n\n", name, b); err != nil {
		return err
	}
	return rp.rc.Flush()
}

func (rp *responder) anthropicStart() error {
	return rp.named("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": rp.id, "type": "message", "role": "assistant", "content": []any{}, "model": rp.model,
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"cache_read_input_tokens": 0, "input_tokens": len(strings.Fields(rp.req.prompt)), "output_tokens": 0},
	}})
}

func (rp *responder) anthropicPiece(text string) error {
	if rp.sent == 1 {
		if err := rp.anthropicStart(); err != nil {
			return err
		}
		if err := rp.named("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "text", "text": ""}}); err != nil {
			return err
		}
	}
	return rp.named("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
		"delta": map[string]any{"type": "text_delta", "text": text}})
}

func (rp *responder) anthropicFinal(res genResult) {
	reason := "max_tokens"
	if res.stopType == "eos" || res.stopType == "word" {
		reason = "end_turn"
	}
	var stopSeq any
	if res.stoppingWord != "" {
		stopSeq = res.stoppingWord
	}
	if !rp.req.stream {
		content := []any{}
		if res.content != "" {
			content = append(content, map[string]any{"type": "text", "text": res.content})
		}
		writeJSON(rp.w, http.StatusOK, map[string]any{
			"id": rp.id, "type": "message", "role": "assistant", "content": content, "model": rp.model,
			"stop_reason": reason, "stop_sequence": stopSeq,
			"usage": map[string]any{"cache_read_input_tokens": 0, "input_tokens": res.evaluated, "output_tokens": res.predicted},
		})
		return
	}
	if rp.sent == 0 {
		_ = rp.anthropicStart()
	} else {
		_ = rp.named("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	}
	_ = rp.named("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": reason, "stop_sequence": stopSeq},
		"usage": map[string]any{"output_tokens": res.predicted}})
	_ = rp.named("message_stop", map[string]any{"type": "message_stop"})
}

// messageID is the id of the Responses answer's one message item.
func (rp *responder) messageID() string { return "msg_" + strings.TrimPrefix(rp.id, "resp_") }

func (rp *responder) responsesPiece(text string) error {
	if rp.sent == 1 {
		inProgress := map[string]any{"id": rp.id, "object": "response", "status": "in_progress"}
		for _, ev := range []struct {
			name string
			v    map[string]any
		}{
			{"response.created", map[string]any{"type": "response.created", "response": inProgress}},
			{"response.in_progress", map[string]any{"type": "response.in_progress", "response": inProgress}},
			{"response.output_item.added", map[string]any{"type": "response.output_item.added", "item": map[string]any{
				"content": []any{}, "id": rp.messageID(), "role": "assistant", "status": "in_progress", "type": "message"}}},
			{"response.content_part.added", map[string]any{"type": "response.content_part.added", "item_id": rp.messageID(),
				"part": map[string]any{"type": "output_text", "text": ""}}},
		} {
			if err := rp.named(ev.name, ev.v); err != nil {
				return err
			}
		}
	}
	return rp.named("response.output_text.delta", map[string]any{"type": "response.output_text.delta",
		"item_id": rp.messageID(), "delta": text})
}

func (rp *responder) responsesFinal(res genResult) {
	part := map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": res.content}
	item := map[string]any{"type": "message", "status": "completed", "id": rp.messageID(), "content": []any{part}, "role": "assistant"}
	output := []any{item}
	if res.content == "" {
		output = []any{}
	}
	now := time.Now().Unix()
	usage := map[string]any{"input_tokens": res.evaluated, "output_tokens": res.predicted,
		"total_tokens": res.evaluated + res.predicted, "input_tokens_details": map[string]any{"cached_tokens": 0}}
	resp := map[string]any{"id": rp.id, "object": "response", "created_at": now, "status": "completed",
		"model": rp.model, "output": output, "usage": usage}
	if !rp.req.stream {
		resp["completed_at"] = now
		writeJSON(rp.w, http.StatusOK, resp)
		return
	}
	if res.content != "" {
		_ = rp.named("response.output_text.done", map[string]any{"type": "response.output_text.done",
			"item_id": rp.messageID(), "text": res.content})
		_ = rp.named("response.content_part.done", map[string]any{"type": "response.content_part.done",
			"item_id": rp.messageID(), "part": part})
		_ = rp.named("response.output_item.done", map[string]any{"type": "response.output_item.done", "item": item})
	}
	_ = rp.named("response.completed", map[string]any{"type": "response.completed", "response": resp})
}
