// Package api serves VramCram's HTTP API with echo: job submission and
// status, results, health, models, the event stream, job streams
// (/jobs/{id}/stream, SSE), the WebSocket /ws, and the OpenAI-compatible
// routes under /v1/.
//
// Every error is JSON of one shape, {"error":{"code","message"}}, with a
// stable code that scripts can branch on; see errors.go for the table. Under
// /v1/ the same errors take OpenAI's shape,
// {"error":{"message","type","param","code"}}, which OpenAI clients parse
// (openai_errors.go).
//
// An OpenAI request is checked, then waits for a slot of a loaded engine
// (the scheduler's Acquire, under the same priorities and VRAM rules as
// queued jobs), and its body goes unchanged to the engine's route of the
// same name; the answer is relayed as the engine writes it, flushed chunk by
// chunk when streamed, over one pooled keep-alive transport
// (openai_proxy.go). A client that leaves ends the engine call and frees the
// slot.
//
// The package depends on the scheduler and the store only through the small
// interfaces declared in server.go, openai.go and stream.go.
package api
