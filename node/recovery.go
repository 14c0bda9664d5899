package node

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/node/engineio"
)

// Connection-state recovery, as socket.io-client ≥ 4.6 practises it: the
// CONNECT reply hands out a pid; events to a user carry their offset in the
// user's history; a client that reconnects sends both back, and if the
// history still holds its offset it keeps its pid and sid (socket.recovered
// is true) and, once it has authenticated as the same user, receives what
// it missed, in order, then live events.

// recoveryState is a socket's pending recovery and the live frames held
// back while the missed ones are replayed.
type recoveryState struct {
	holding atomic.Bool
	offset  string // the client's last offset; empty when not recovering
	missed  []*adapter.Message
	held    []heldFrame
	// heldBytes is the size of held, bounded by maxHeldBytes.
	heldBytes int
	// cut is set once held overflowed: the socket is being closed.
	cut atomic.Bool
	// floor is the last replayed offset. The replay is read on Redis's
	// command connection and live events on its pub/sub connection, and
	// the two are not ordered: a live copy of a replayed event may arrive
	// after the replay, and is dropped.
	floor atomic.Pointer[string]
}

type heldFrame struct {
	frame       []byte
	attachments [][]byte
	offset      string
}

// history returns the adapter's history when recovery is on.
func (n *Node) history() adapter.History {
	if n.opts.RecoveryWindow <= 0 {
		return nil
	}
	h, _ := n.adapter.(adapter.History)
	return h
}

func offsetOfRoom(offset, room string) bool { return adapter.OffsetInRoom(offset, room) }

// sidFor derives a socket id from its pid, so a recovered socket keeps its sid
// on any node without any shared state.
func sidFor(pid string) string {
	h := sha256.Sum256([]byte("hubnode sid " + pid))
	return base64.RawURLEncoding.EncodeToString(h[:15])
}

// preparePID gives a new socket its pid, recovering the client's previous
// one when its offset is still in the history.
func (s *socket) preparePID(fields map[string]json.RawMessage) {
	h := s.n.history()
	if h == nil {
		return
	}
	var pid, offset string
	_ = json.Unmarshal(fields["pid"], &pid)
	_ = json.Unmarshal(fields["offset"], &offset)
	if len(pid) == 20 && offset != "" {
		ctx, cancel := context.WithTimeout(context.Background(), roomTimeout)
		ok := h.Recoverable(ctx, offset)
		cancel()
		if ok {
			s.pid, s.id = pid, sidFor(pid)
			s.rec.offset = offset
			s.n.metrics.recoveries.WithLabelValues("accepted").Inc()
			return
		}
		s.n.metrics.recoveries.WithLabelValues("refused").Inc()
	}
	s.pid = engineio.NewID()
	s.id = sidFor(s.pid)
}

// holdIfRecovering starts holding live frames back; called before the
// socket joins its user's room, so none can slip ahead of the replay.
func (s *socket) holdIfRecovering() {
	if s.rec.offset != "" {
		s.rec.holding.Store(true)
	}
}

// Bounds of the frames a socket holds beyond its transport's WRITE_QUEUE
// (a burst, or live events during a replay): past either, the client is
// too far behind and is disconnected as a slow consumer.
const (
	maxHeldFrames = 1024
	maxHeldBytes  = 4 << 20
)

// deliver writes a broadcast frame to the socket. It holds the frame
// instead while a replay is under way, or when the transport's queue is
// three quarters full: a burst (a batch emit, a recorder's backlog) is then
// written as the client reads, paced like a replay, instead of overflowing
// WRITE_QUEUE and cutting a client that reads at full speed.
func (s *socket) deliver(frame []byte, attachments [][]byte, offset string) {
	if f := s.rec.floor.Load(); f != nil && offset != "" && adapter.CompareOffsets(offset, *f) <= 0 {
		return // already replayed
	}
	if s.rec.cut.Load() {
		return
	}
	burst := s.e.currentTransport().backlog() >= max(1, s.n.opts.WriteQueue*3/4)
	if burst || s.rec.holding.Load() {
		s.mu.Lock()
		start := burst && !s.rec.holding.Load()
		if start || s.rec.holding.Load() {
			s.rec.held = append(s.rec.held, heldFrame{frame, attachments, offset})
			s.rec.heldBytes += len(frame)
			for _, a := range attachments {
				s.rec.heldBytes += len(a)
			}
			over := (len(s.rec.held) > maxHeldFrames || s.rec.heldBytes > maxHeldBytes) && !s.rec.cut.Swap(true)
			if over {
				s.rec.held, s.rec.heldBytes = nil, 0
			}
			if start {
				s.rec.holding.Store(true)
			}
			s.mu.Unlock()
			switch {
			case over:
				// Not here: deliveries run under the room index's lock,
				// which closing takes too.
				s.n.metrics.slowConsumers.Add(1)
				go s.e.close(reasonSlowConsumer)
			case start:
				go s.release("") // paced; ends the holding once drained
			}
			return
		}
		s.mu.Unlock()
	}
	if attachments != nil {
		s.e.writeFrames(frame, attachments)
	} else {
		s.e.writeFrame(frame)
	}
}

// loadRecovery fetches what the socket missed after its offset, once it has
// authenticated as the offset's user and joined its room, before
// `authenticated` goes out. If the history no longer covers the offset, the
// connection is closed without a DISCONNECT and false returned: the client
// reconnects and gets a fresh session, having been told nothing.
func (s *socket) loadRecovery() bool {
	offset := s.rec.offset
	if offset == "" {
		return true
	}
	n := s.n
	ctx, cancel := context.WithTimeout(context.Background(), roomTimeout)
	msgs, ok, err := n.history().Recover(ctx, s.userRoom, offset)
	cancel()
	if err != nil || !ok {
		n.log.Debug("recovery failed after authentication", zap.String("sid", s.id), zap.Error(err))
		n.metrics.recoveries.WithLabelValues("lost").Inc()
		s.rec.offset = ""
		s.release("")
		s.e.close(reasonTransportClose)
		return false
	}
	s.rec.missed = msgs
	return true
}

// finishRecovery writes the missed events, then the frames held meanwhile
// that are newer, and lets live delivery through.
func (s *socket) finishRecovery() {
	if s.rec.offset == "" {
		return
	}
	last, msgs := s.rec.offset, s.rec.missed
	s.rec.offset, s.rec.missed = "", nil
	n := s.n
	for _, m := range msgs {
		if !s.paced() {
			n.metrics.recoveries.WithLabelValues("lost").Inc()
			s.release("")
			s.e.close(reasonSlowConsumer)
			return
		}
		frame := encodeMessage(m)
		if m.Attachments != nil {
			s.e.writeFrames(frame, m.Attachments)
		} else {
			s.e.writeFrame(frame)
		}
		last = m.Offset
	}
	n.metrics.replayed.Add(int64(len(msgs)))
	s.rec.floor.Store(&last)
	s.release(last)
}

// paced waits until the transport's queue is at most half full, so a replay
// of many missed events never overflows WRITE_QUEUE (which would close the
// connection and start the reconnection over). It gives up after
// replayTimeout, when the client is not reading. The wait starts short and
// backs off: a client reading at full speed drains half a small queue in
// well under a millisecond, and a fixed 2 ms sleep would cap a burst to
// one socket at WRITE_QUEUE/2 frames per 2 ms.
func (s *socket) paced() bool {
	limit := max(1, s.n.opts.WriteQueue/2)
	deadline := time.Now().Add(replayTimeout)
	wait := 50 * time.Microsecond
	for s.e.currentTransport().backlog() >= limit {
		if time.Now().After(deadline) || s.e.isClosed() {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Millisecond)
	}
	return true
}

// replayTimeout bounds how long a replay waits for a client to read.
const replayTimeout = 10 * time.Second

// release writes the held frames newer than last (all of them when last is
// empty), paced like the replay, and ends holding. Frames that arrive while
// it writes are held and written in turn; s.mu is never held while waiting,
// so deliveries to other sockets never wait for this one.
func (s *socket) release(last string) {
	for {
		s.mu.Lock()
		batch := s.rec.held
		s.rec.held, s.rec.heldBytes = nil, 0
		if len(batch) == 0 {
			s.rec.holding.Store(false)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, h := range batch {
			if last != "" && h.offset != "" && adapter.CompareOffsets(h.offset, last) <= 0 {
				continue // already replayed
			}
			if !s.paced() {
				s.mu.Lock()
				s.rec.held, s.rec.heldBytes = nil, 0
				s.rec.holding.Store(false)
				s.mu.Unlock()
				if !s.e.isClosed() {
					s.n.metrics.slowConsumers.Add(1)
				}
				s.e.close(reasonSlowConsumer)
				return
			}
			if h.attachments != nil {
				s.e.writeFrames(h.frame, h.attachments)
			} else {
				s.e.writeFrame(h.frame)
			}
		}
	}
}
