package node

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestMain fails the package when any test leaves a goroutine behind:
// every session the tests open and close must end its read pump, write
// pump, heartbeat and HTTP handler. No goroutine is ignored: the tests close
// their WebSocket clients, shut their nodes down and close their httptest
// servers (which also closes the idle keep-alive connections of
// http.DefaultTransport and of srv.Client()). goleak checks only after a
// successful run.
func TestMain(m *testing.M) {
	// go-redis reports every failed dial of the outage tests on stderr;
	// the adapter's own logs say what matters.
	redis.SetLogger(quietRedis{})
	goleak.VerifyTestMain(m)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
