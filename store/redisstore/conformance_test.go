package redisstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramcram/vramcram/store/redisstore"
	"github.com/vramcram/vramcram/store/redisstore/redistest"
	"github.com/vramcram/vramcram/store/storetest"
)

var prefixes atomic.Int64

// openRedis opens a handle named node on srv under prefix, closed at cleanup.
func openRedis(t *testing.T, srv *redistest.Server, prefix, node string, o storetest.Options) *redisstore.Store {
	t.Helper()
	lease := time.Second
	if strings.HasSuffix(node, "-long-lease") { // outlives a Redis restart on a loaded machine
		lease = time.Minute
	}
	s, err := redisstore.Open(context.Background(), redisstore.Options{
		URL: srv.URL(), Prefix: prefix, Node: node, Lease: lease, ReapInterval: 50 * time.Millisecond,
		MaxQueued: o.MaxQueued, Aging: o.Aging, NowFunc: o.NowFunc,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the queue contract's suite on a real redis-server.
// A crash is a node dying: another node on the same Redis takes its jobs
// back when their lease runs out.
func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Exercise(t, storetest.Harness{
		Open: func(t *testing.T, o storetest.Options) storetest.Queue {
			return openRedis(t, srv, fmt.Sprintf("t%d:", prefixes.Add(1)), "node-a", o)
		},
		Crash: func(t *testing.T, q storetest.Queue, o storetest.Options) storetest.Queue {
			s := q.(*redisstore.Store)
			redisstore.Crash(s)
			return openRedis(t, srv, s.Prefix(), "node-b", o)
		},
	})
}
