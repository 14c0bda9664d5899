package presence

import (
	"context"
	"sync"
)

// Memory keeps presence in process, for a node that runs alone.
type Memory struct {
	nodeID string
	mu     sync.RWMutex
	users  map[string]map[string]struct{} // userID -> connection ids
	conns  int
}

var _ Presence = (*Memory)(nil)

// NewMemory returns an empty in-process presence for node nodeID.
func NewMemory(nodeID string) *Memory {
	return &Memory{nodeID: nodeID, users: make(map[string]map[string]struct{})}
}

// Add implements Presence. Adding a connection twice counts it once.
func (m *Memory) Add(_ context.Context, userID, connID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.users[userID]
	if set == nil {
		set = make(map[string]struct{}, 1)
		m.users[userID] = set
	}
	if _, ok := set[connID]; !ok {
		set[connID] = struct{}{}
		m.conns++
	}
	return nil
}

// Remove implements Presence. Removing an unknown connection is a no-op.
func (m *Memory) Remove(_ context.Context, userID, connID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.users[userID]
	if _, ok := set[connID]; !ok {
		return nil
	}
	delete(set, connID)
	m.conns--
	if len(set) == 0 {
		delete(m.users, userID)
	}
	return nil
}

// UserConnections implements Presence.
func (m *Memory) UserConnections(_ context.Context, userID string) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.users[userID]), nil
}

// Stats implements Presence; the single node is the only row.
func (m *Memory) Stats(context.Context) (Stats, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	users := len(m.users)
	return Stats{
		TotalConnections:          m.conns,
		AuthenticatedUsers:        users,
		AverageConnectionsPerUser: Average(m.conns, users),
		Nodes:                     []NodeStats{{NodeID: m.nodeID, Connections: m.conns, AuthenticatedUsers: users}},
	}, nil
}

// Close implements Presence.
func (m *Memory) Close() error { return nil }
