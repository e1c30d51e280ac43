package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Context limits, as llama.cpp computes them (src/llama-context.cpp and
// tools/server/server-context.cpp): n_ctx is -c (or the training context)
// padded to 256; without a unified KV cache each of the --parallel slots
// gets n_ctx/parallel, padded to 256; a slot never exceeds the training
// context. A prompt of as many tokens as its slot holds, or more, is
// refused with 400 exceed_context_size_error, streamed or not. The stand-in
// counts a prompt's words as its tokens.
const ctxPad = 256

func padCtx(n int) int { return (n + ctxPad - 1) / ctxPad * ctxPad }

// nCtxTrain is the stand-in model's training context.
func (o options) nCtxTrain() int { return max(o.ctxSize, 4096) }

// slotCtx is the context one slot may use.
func (o options) slotCtx() int {
	n := o.ctxSize
	if n <= 0 {
		n = o.nCtxTrain()
	}
	n = padCtx(n)
	// llama-server unifies the cache when --parallel is left out (auto).
	if o.parallelSet && !o.kvUnified {
		n = max(padCtx(n/max(o.parallel, 1)), ctxPad)
	}
	return min(n, o.nCtxTrain())
}

// promptTokens counts a prompt's tokens under the stand-in's rule.
func promptTokens(prompt string) int { return len(strings.Fields(prompt)) }

// checkContext answers 400 exceed_context_size_error when a generation's
// prompt does not fit its slot, and reports whether it did.
func (s *server) checkContext(w http.ResponseWriter, prompt string) bool {
	n, nCtx := promptTokens(prompt), s.o.slotCtx()
	if n < nCtx {
		return true
	}
	writeContextError(w, fmt.Sprintf("request (%d tokens) exceeds the available context size (%d tokens), try increasing it", n, nCtx), n, nCtx)
	return false
}

// writeContextError writes llama-server's exceed_context_size_error, which
// alone carries n_prompt_tokens and n_ctx in its error object.
func writeContextError(w http.ResponseWriter, msg string, n, nCtx int) {
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{
		"code": http.StatusBadRequest, "message": msg, "type": "exceed_context_size_error",
		"n_prompt_tokens": n, "n_ctx": nCtx,
	}})
}

// Keep-alive, as cpp-httplib's defaults in llama-server.
const (
	keepAliveTimeout     = 5 * time.Second
	keepAliveMaxRequests = 100
)

type connKey struct{}

// connContext gives each connection a request counter.
func connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, new(atomic.Int64))
}

// keepAlive sets the connection headers of an answer: "Connection: close"
// on the connection's last request, else the Keep-Alive figures.
func keepAlive(w http.ResponseWriter, r *http.Request) {
	n, _ := r.Context().Value(connKey{}).(*atomic.Int64)
	if n != nil && n.Add(1) >= keepAliveMaxRequests {
		w.Header().Set("Connection", "close")
		return
	}
	w.Header().Set("Keep-Alive", fmt.Sprintf("timeout=%d, max=%d", int(keepAliveTimeout.Seconds()), keepAliveMaxRequests))
}
