package node

import (
	"sync"
	"sync/atomic"
)

// metrics are the node's counters. They are plain atomics so the hot paths
// pay nothing for them; the operations work exposes them to Prometheus.
type metrics struct {
	deliveries         atomic.Int64
	emitFailures       atomic.Int64
	protocolErrors     atomic.Int64
	slowConsumers      atomic.Int64
	panics             atomic.Int64
	upgrades           atomic.Int64
	originRefused      atomic.Int64
	connectionsRefused atomic.Int64

	mu           sync.Mutex
	emits        map[string]int64 // by door
	authFailures map[string]int64 // by reason
}

func (m *metrics) init() {
	m.emits = make(map[string]int64)
	m.authFailures = make(map[string]int64)
}

func (m *metrics) emitted(door string) {
	m.mu.Lock()
	m.emits[door]++
	m.mu.Unlock()
}

func (m *metrics) authFailure(reason string) {
	m.mu.Lock()
	m.authFailures[reason]++
	m.mu.Unlock()
}
