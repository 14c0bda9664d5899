package node

import (
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/node/engineio"
	"github.com/messaging-hub/hubnode/node/socketio"
)

// transport carries one Engine.IO session's packets. Writes must not block:
// a transport that cannot take a packet closes itself (slow consumer).
type transport interface {
	// writeText queues one text packet (type digit first).
	writeText(b []byte) error
	// writeBinary queues one binary message.
	writeBinary(b []byte) error
	// close ends the transport; the client sees "transport close" and
	// reconnects. flush delivers what is queued first (a DISCONNECT, say);
	// without it the queue is dropped (the client is presumed gone).
	close(flush bool)
	// abort cuts the connection at once, for a client that cannot keep up.
	abort()
	// backlog is how many packets wait to be sent.
	backlog() int
	// name is "websocket" or "polling".
	name() string
}

// Close reasons, as Node names them, for logs and metrics.
const (
	reasonTransportClose  = "transport close"
	reasonClientClose     = "client close"
	reasonSlowConsumer    = "slow consumer"
	reasonPingTimeout     = "ping timeout"
	reasonParseError      = "parse error"
	reasonServerShutdown  = "server shutting down"
	reasonServerDisconnct = "server namespace disconnect"
	reasonAuthTimeout     = "authentication timeout"
)

// engineSession is one Engine.IO session: heartbeat, packet dispatch and the
// Socket.IO socket riding on it. The transport is only a carrier, so the
// Socket.IO layer never knows whether WebSocket or polling serves it.
type engineSession struct {
	n  *Node
	id string
	tr transport

	// mu guards the fields below and orders multi-frame writes (a binary
	// event's text part and its attachments must not interleave with others).
	mu           sync.Mutex
	closed       bool
	heartbeat    *time.Timer
	awaitingPong bool
	authTimer    *time.Timer
	socks        []*socket // one per joined namespace; almost always one
	// probe is the WebSocket of an upgrade in progress (polling sessions only).
	probe        *wsTransport
	upgradeTimer *time.Timer

	// decMu serialises inbound packets: polling POSTs and, after an
	// upgrade, the WebSocket reader never decode or dispatch at once.
	decMu sync.Mutex
	dec   socketio.Decoder
}

func newEngineSession(n *Node, tr transport) *engineSession {
	return &engineSession{n: n, id: engineio.NewID(), tr: tr}
}

// open sends the open packet and starts the heartbeat and the authentication deadline.
func (e *engineSession) open(upgrades []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.tr.writeText(engineio.EncodeOpen(engineio.OpenInfo{
		SID:          e.id,
		Upgrades:     upgrades,
		PingInterval: e.n.opts.PingInterval.Milliseconds(),
		PingTimeout:  e.n.opts.PingTimeout.Milliseconds(),
		MaxPayload:   e.n.opts.MaxPayload,
	}))
	e.heartbeat = time.AfterFunc(e.n.opts.PingInterval, e.onHeartbeat)
	e.authTimer = time.AfterFunc(e.n.opts.AuthTimeout, e.onAuthTimeout)
}

// onHeartbeat pings on schedule whatever the traffic (the client's watchdog
// only counts pings), and closes the session when a pong is overdue.
func (e *engineSession) onHeartbeat() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if e.awaitingPong {
		e.mu.Unlock()
		e.close(reasonPingTimeout)
		return
	}
	e.awaitingPong = true
	_ = e.tr.writeText([]byte{'0' + byte(engineio.Ping)})
	e.heartbeat.Reset(e.n.opts.PingTimeout)
	e.mu.Unlock()
}

func (e *engineSession) onPong() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.awaitingPong && !e.closed {
		e.awaitingPong = false
		e.heartbeat.Reset(e.n.opts.PingInterval)
	}
}

// onText handles one inbound text packet.
func (e *engineSession) onText(b []byte) {
	pkt, err := engineio.DecodeText(b)
	if err != nil {
		e.protocolError("undecodable Engine.IO packet", err)
		return
	}
	e.onPacket(pkt)
}

// onPacket handles one inbound Engine.IO packet of either transport.
func (e *engineSession) onPacket(pkt engineio.Packet) {
	switch pkt.Type {
	case engineio.Pong:
		e.onPong()
	case engineio.Message:
		if e.n.engineEcho {
			e.writeFrame(engineio.AppendText(nil, engineio.Message, pkt.Data))
			return
		}
		e.decMu.Lock()
		defer e.decMu.Unlock()
		p, err := e.dec.AddText(pkt.Data)
		if err != nil {
			e.protocolError("invalid Socket.IO packet", err)
			return
		}
		if p != nil {
			e.onSocketIO(p)
		}
	case engineio.Close:
		e.close(reasonClientClose)
	case engineio.Noop:
	default:
		// A client ping is the wrong heartbeat direction in v4 (probes
		// belong to the upgrading WebSocket); open and upgrade are never
		// valid here.
		e.protocolError("unexpected Engine.IO packet type", nil)
	}
}

// onBinary handles one inbound binary message: a Socket.IO attachment.
func (e *engineSession) onBinary(b []byte) {
	if e.n.engineEcho {
		e.writeFrames(nil, [][]byte{b})
		return
	}
	e.decMu.Lock()
	defer e.decMu.Unlock()
	p, err := e.dec.AddBinary(b)
	if err != nil {
		e.protocolError("unexpected binary message", err)
		return
	}
	if p != nil {
		e.onSocketIO(p)
	}
}

// onSocketIO dispatches a complete Socket.IO packet.
func (e *engineSession) onSocketIO(p *socketio.Packet) {
	s := e.socket(p.Nsp)
	switch p.Type {
	case socketio.Connect:
		if s != nil {
			e.protocolError("second CONNECT to a namespace", nil)
			return
		}
		e.n.app.connect(e, p.Nsp, p.Data)
	case socketio.Disconnect:
		if s != nil {
			s.close(reasonClientDisconnect)
		}
	case socketio.Event, socketio.BinaryEvent:
		if s == nil {
			e.protocolError("event for a namespace not joined", nil)
			return
		}
		e.n.app.event(s, p)
	case socketio.Ack, socketio.BinaryAck:
		if s == nil {
			e.protocolError("ack for a namespace not joined", nil)
			return
		}
		s.onAck(p)
	default:
		e.protocolError("CONNECT_ERROR from a client", nil)
	}
}

// socket returns the session's socket on namespace nsp, or nil.
func (e *engineSession) socket(nsp string) *socket {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.socks {
		if s.nsp == nsp {
			return s
		}
	}
	return nil
}

// attach records a connected socket; detach forgets it.
func (e *engineSession) attach(s *socket) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.socks = append(e.socks, s)
}

func (e *engineSession) detach(s *socket) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.socks = slices.DeleteFunc(e.socks, func(x *socket) bool { return x == s })
}

// sockets returns the session's sockets.
func (e *engineSession) sockets() []*socket {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.socks)
}

// protocolError logs a client's protocol violation and closes its session.
func (e *engineSession) protocolError(what string, err error) {
	e.n.log.Debug("closing session on protocol error", zap.String("sid", e.id), zap.String("what", what), zap.Error(err))
	e.n.metrics.protocolErrors.Add(1)
	e.close(reasonParseError)
}

// writePacket writes a Socket.IO packet and its attachments as one unit.
func (e *engineSession) writePacket(p *socketio.Packet) {
	buf := make([]byte, 0, len(p.Data)+24)
	buf = append(buf, '0'+byte(engineio.Message))
	e.writeFrames(socketio.AppendEncode(buf, p), p.Attachments)
}

// writeFrame writes an encoded Engine.IO text packet; it is the emit hot path.
func (e *engineSession) writeFrame(frame []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		_ = e.tr.writeText(frame)
	}
}

// writeFrames writes a text packet followed by its binary attachments,
// with no other write in between.
func (e *engineSession) writeFrames(text []byte, attachments [][]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if text != nil {
		_ = e.tr.writeText(text)
	}
	for _, a := range attachments {
		_ = e.tr.writeBinary(a)
	}
}

// onAuthTimeout ends a session that joined no namespace in time, and tells
// the app about sockets that are still connected.
func (e *engineSession) onAuthTimeout() {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return
	}
	socks := e.sockets()
	if len(socks) == 0 {
		e.close(reasonAuthTimeout)
		return
	}
	for _, s := range socks {
		e.n.app.deadline(s)
	}
}

// restartAuthTimer gives a newly connected socket the full AUTH_TIMEOUT.
func (e *engineSession) restartAuthTimer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed && e.authTimer != nil {
		e.authTimer.Reset(e.n.opts.AuthTimeout)
	}
}

// stopAuthTimer is called once the socket has authenticated.
func (e *engineSession) stopAuthTimer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.authTimer != nil {
		e.authTimer.Stop()
	}
}

// close ends the session and its transport; without a prior DISCONNECT
// packet the client treats it as "transport close" and reconnects.
func (e *engineSession) close(reason string) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	if e.heartbeat != nil {
		e.heartbeat.Stop()
	}
	if e.authTimer != nil {
		e.authTimer.Stop()
	}
	if e.upgradeTimer != nil {
		e.upgradeTimer.Stop()
	}
	socks, tr, probe := e.socks, e.tr, e.probe
	e.socks, e.probe = nil, nil
	e.mu.Unlock()
	for _, s := range socks {
		s.close(reason)
	}
	switch reason {
	case reasonClientClose:
		tr.abort()
	case reasonPingTimeout, reasonParseError, reasonSlowConsumer:
		tr.close(false)
	default:
		tr.close(true)
	}
	if probe != nil {
		probe.close(true)
	}
	e.n.untrack(e)
}

// transportClosed is called by a transport whose connection has ended.
func (e *engineSession) transportClosed(tr transport) {
	e.mu.Lock()
	current := e.tr == tr
	e.mu.Unlock()
	if current {
		e.close(reasonTransportClose)
	}
}

// isClosed reports whether the session has ended.
func (e *engineSession) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// currentTransport returns the transport that carries the session now.
func (e *engineSession) currentTransport() transport {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tr
}
