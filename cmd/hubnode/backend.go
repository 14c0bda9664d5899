package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/config"
	"github.com/messaging-hub/hubnode/node"
	"github.com/messaging-hub/hubnode/presence"
)

// backend is what ties a node to the others: its adapter and presence, and
// for cluster mode the Redis connection behind them.
type backend struct {
	adapter  adapter.Adapter
	presence presence.Presence
	redis    node.HealthChecker // nil on a single node
	close    func()
	mode     string
}

// newBackend builds the in-memory pair for a single node, or the Redis pair
// when REDIS_URL is set.
func newBackend(ctx context.Context, cfg config.Config, log *zap.Logger) (*backend, error) {
	if cfg.RedisURL == "" {
		return &backend{
			adapter:  adapter.NewMemoryWith(adapter.MemoryOptions{HistoryWindow: cfg.RecoveryWindow, HistoryMaxLen: cfg.HistoryMaxLen}),
			presence: presence.NewMemory(cfg.NodeID),
			close:    func() {},
			mode:     "single node (in-memory adapter)",
		}, nil
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	// Fail fast instead of hanging: an emit that cannot reach Redis must
	// report it within seconds, and health checks must answer in time.
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.PoolTimeout = 2 * time.Second
	opt.MaxRetries = 1
	client := redis.NewClient(opt)
	redis.SetLogger(redisLogger{log.Named("redis")})

	ro := adapter.RedisOptions{Client: client, Logger: log.Named("adapter"),
		HistoryWindow: cfg.RecoveryWindow, HistoryMaxLen: cfg.HistoryMaxLen}
	if cfg.RecordEmitter { // emits of @socket.io/redis-emitter to a user get offsets too
		ro.EmitterRooms = node.UserRoom("")
	}
	ad, err := adapter.NewRedis(ro)
	if err != nil {
		return nil, err
	}
	pr, err := presence.NewRedis(presence.RedisOptions{Client: client, NodeID: cfg.NodeID, Logger: log.Named("presence")})
	if err != nil {
		return nil, err
	}
	// Without Redis at start the node still serves (not ready) and keeps
	// trying to register its presence.
	pctx, stopRetry := context.WithCancel(ctx)
	retried := make(chan struct{})
	go func() {
		defer close(retried)
		for {
			err := pr.Start(pctx)
			if err == nil || pctx.Err() != nil {
				return
			}
			log.Warn("presence not registered yet; retrying", zap.Error(err))
			select {
			case <-time.After(500 * time.Millisecond):
			case <-pctx.Done():
				return
			}
		}
	}()
	return &backend{
		adapter:  ad,
		presence: pr,
		redis:    ad,
		mode:     "cluster (redis adapter " + ad.UID() + ")",
		close: func() {
			stopRetry()
			<-retried
			_ = pr.Close()
			_ = ad.Close()
			_ = client.Close()
		},
	}, nil
}

// redisLogger sends go-redis's own messages (mostly failed dials during an
// outage, which the adapter reports already) to the debug log.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}
