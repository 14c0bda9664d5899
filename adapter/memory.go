package adapter

import "context"

// Memory is the adapter of a single node: every broadcast goes straight to
// local delivery and nothing leaves the process.
type Memory struct {
	h Handler
}

var _ Adapter = (*Memory)(nil)

// NewMemory returns an adapter for a node that runs alone.
func NewMemory() *Memory { return &Memory{} }

// Start implements Adapter.
func (m *Memory) Start(_ context.Context, h Handler) error {
	m.h = h
	return nil
}

// Broadcast implements Adapter.
func (m *Memory) Broadcast(_ context.Context, msg *Message) error {
	m.h.DeliverLocal(msg)
	return nil
}

// DisconnectSockets implements Adapter.
func (m *Memory) DisconnectSockets(_ context.Context, rooms []string, close bool) error {
	m.h.DisconnectLocal(rooms, nil, close)
	return nil
}

// AddRoom implements Adapter: local delivery needs no subscription.
func (m *Memory) AddRoom(context.Context, string) error { return nil }

// DelRoom implements Adapter.
func (m *Memory) DelRoom(string) {}

// Close implements Adapter.
func (m *Memory) Close() error { return nil }
