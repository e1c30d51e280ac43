package store

import "errors"

// ErrUnavailable: the backend cannot be reached (a Redis server that is down
// or cut off). The operation may or may not have taken effect; callers that
// accept work answer 503 and let the client retry.
var ErrUnavailable = errors.New("store unavailable")
