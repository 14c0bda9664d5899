package adapter

import (
	"context"
	"sync"
	"time"
)

// MemoryOptions configure a single node's adapter. Zero values take the
// defaults stated per field.
type MemoryOptions struct {
	// HistoryWindow keeps recorded broadcasts this long for recovery.
	// Zero keeps none.
	HistoryWindow time.Duration
	// HistoryMaxLen bounds the messages kept per room. Default 500.
	HistoryMaxLen int
}

// Memory is the adapter of a single node: every broadcast goes straight to
// local delivery and nothing leaves the process.
type Memory struct {
	h    Handler
	opts MemoryOptions

	mu        sync.Mutex
	logs      map[string]*roomLog // by room hash
	last      position
	lastSweep time.Time
}

type roomLog struct {
	room    string
	entries []logEntry
}

type logEntry struct {
	pos position
	at  time.Time
	msg *Message
}

var (
	_ Adapter = (*Memory)(nil)
	_ History = (*Memory)(nil)
)

// NewMemory returns an adapter for a node that runs alone, keeping no history.
func NewMemory() *Memory { return NewMemoryWith(MemoryOptions{}) }

// NewMemoryWith returns an adapter for a node that runs alone.
func NewMemoryWith(o MemoryOptions) *Memory {
	if o.HistoryMaxLen <= 0 {
		o.HistoryMaxLen = 500
	}
	return &Memory{opts: o, logs: make(map[string]*roomLog)}
}

// Start implements Adapter.
func (m *Memory) Start(_ context.Context, h Handler) error {
	m.h = h
	return nil
}

// Broadcast implements Adapter.
func (m *Memory) Broadcast(_ context.Context, msg *Message) error {
	if msg.Record && m.opts.HistoryWindow > 0 && len(msg.Rooms) == 1 {
		m.record(msg)
	}
	m.h.DeliverLocal(msg)
	return nil
}

// record gives msg the next position of its room's history and keeps it.
func (m *Memory) record(msg *Message) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := position{ms: uint64(now.UnixMilli())}
	if !m.last.less(p) { // same millisecond, or a clock step back
		p = position{ms: m.last.ms, seq: m.last.seq + 1}
	}
	m.last = p
	room := msg.Rooms[0]
	hash := RoomHash(room)
	withOffset(msg, makeOffset(hash, p))
	l := m.logs[hash]
	if l == nil {
		l = &roomLog{room: room}
		m.logs[hash] = l
	}
	l.entries = append(l.entries, logEntry{pos: p, at: now, msg: msg})
	l.trim(now, m.opts)
	// Rooms that stopped receiving are dropped once per window.
	if now.Sub(m.lastSweep) > m.opts.HistoryWindow {
		m.lastSweep = now
		for h, x := range m.logs {
			if x.trim(now, m.opts); len(x.entries) == 0 {
				delete(m.logs, h)
			}
		}
	}
}

func (l *roomLog) trim(now time.Time, o MemoryOptions) {
	drop := max(0, len(l.entries)-o.HistoryMaxLen)
	for drop < len(l.entries) && now.Sub(l.entries[drop].at) > o.HistoryWindow {
		drop++
	}
	if drop > 0 {
		l.entries = append(l.entries[:0:0], l.entries[drop:]...)
	}
}

// find returns the index of p in the room's kept entries, or -1.
func (l *roomLog) find(p position, now time.Time, o MemoryOptions) int {
	for i, e := range l.entries {
		if e.pos == p {
			if now.Sub(e.at) > o.HistoryWindow {
				return -1
			}
			return i
		}
	}
	return -1
}

// Recoverable implements History: the offset must still be kept, so that
// nothing after it has been dropped.
func (m *Memory) Recoverable(_ context.Context, offset string) bool {
	hash, p, err := parseOffset(offset)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.logs[hash]
	return l != nil && l.find(p, time.Now(), m.opts) >= 0
}

// Recover implements History.
func (m *Memory) Recover(_ context.Context, room, offset string) ([]*Message, bool, error) {
	hash, p, err := parseOffset(offset)
	if err != nil || hash != RoomHash(room) {
		return nil, false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.logs[hash]
	if l == nil {
		return nil, false, nil
	}
	i := l.find(p, time.Now(), m.opts)
	if i < 0 {
		return nil, false, nil
	}
	out := make([]*Message, 0, len(l.entries)-i-1)
	for _, e := range l.entries[i+1:] {
		out = append(out, e.msg)
	}
	return out, true, nil
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
