package runner

import (
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// engineIdleTimeout is how long the engine client keeps an idle connection:
// below llama-server's keep-alive (cpp-httplib closes a connection idle for
// 5 s), so the client gives up a connection before the engine does and
// seldom writes into one the engine is closing.
const engineIdleTimeout = 3 * time.Second

// reuseRetry is the engine client's RoundTripper. A request that fails on a
// reused keep-alive connection before the engine sent a byte of its answer
// met a connection the engine had just closed (idle timeout, its 100th
// request): it is sent once more, on a fresh connection. net/http retries
// such a request itself only when it is idempotent, and engine requests are
// POSTs. The request never reached a handler that answered, so sending it
// again runs it once; a body that cannot be replayed (GetBody nil) is not
// retried.
type reuseRetry struct {
	base *http.Transport
}

func (r *reuseRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	var reused, answered atomic.Bool
	trace := &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
		GotFirstResponseByte: func() { answered.Store(true) },
	}
	resp, err := r.base.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err == nil || !reused.Load() || answered.Load() || req.Context().Err() != nil {
		return resp, err
	}
	again := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, err
		}
		body, gerr := req.GetBody()
		if gerr != nil {
			return resp, err
		}
		again.Body = body
	}
	r.base.CloseIdleConnections() // the others idled as long: likely closed too
	return r.base.RoundTrip(again)
}
