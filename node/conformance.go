package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/node/socketio"
)

// Conformance serves what the official protocol suites (the test-suite
// folders of socketio/engine.io-protocol and socketio/socket.io-protocol)
// expect of their reference servers, built from hubnode's own protocol
// layer: an Engine.IO echo at /engine.io/ and a Socket.IO echo at
// /socket.io/ with the namespaces "/" and "/custom", pinging every 300 ms
// with a 200 ms timeout. cmd/conformance runs it; hubnode never does.
type Conformance struct {
	engine, socket *Node
	mux            *http.ServeMux
}

// NewConformance builds the conformance server.
func NewConformance(log *zap.Logger) (*Conformance, error) {
	base := Options{
		Auth:           AuthOptions{Secret: []byte("conformance-only-secret")},
		AllowedOrigins: []string{"*"},
		PingInterval:   300 * time.Millisecond,
		PingTimeout:    200 * time.Millisecond,
		MaxPayload:     1_000_000,
		AuthTimeout:    time.Second, // the suite's connectTimeout
		Logger:         log,
	}
	eo := base
	eo.Path = "/engine.io/"
	engine, err := New(eo)
	if err != nil {
		return nil, err
	}
	engine.engineEcho = true
	so := base
	so.Path = "/socket.io/"
	sock, err := New(so)
	if err != nil {
		return nil, err
	}
	sock.app = echoApp{}
	c := &Conformance{engine: engine, socket: sock, mux: http.NewServeMux()}
	for _, n := range []*Node{engine, sock} {
		if err := n.Start(context.Background()); err != nil {
			return nil, err
		}
		h := n.Handler()
		p := n.opts.Path
		c.mux.Handle(p, h)
		c.mux.Handle(p[:len(p)-1], h)
	}
	return c, nil
}

// ServeHTTP implements http.Handler.
func (c *Conformance) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// Shutdown closes both nodes.
func (c *Conformance) Shutdown(ctx context.Context) error {
	return errors.Join(c.engine.Shutdown(ctx), c.socket.Shutdown(ctx))
}

// echoApp is the suite's reference behaviour: on connect, emit "auth" with
// the handshake's auth; echo "message" as "message-back"; acknowledge
// "message-with-ack" with its own arguments (binary attachments included).
type echoApp struct{}

func (echoApp) connect(e *engineSession, nsp string, auth json.RawMessage) {
	if nsp != "/" && nsp != "/custom" {
		e.writePacket(&socketio.Packet{Type: socketio.ConnectError, Nsp: nsp, ID: socketio.NoAck, Data: messageJSON("Invalid namespace")})
		return
	}
	s := newSocket(e.n, e, nsp)
	e.attach(s)
	e.stopAuthTimer()
	s.sendConnectReply()
	if auth == nil {
		auth = json.RawMessage(`{}`)
	}
	// Node's engine writes a packet only once the previous one has drained,
	// so its reference server's "auth" reaches the suite's client in a later
	// read than the CONNECT reply; the suite's waits rely on that. Written at
	// once, both arrive in one read and the suite's second wait misses
	// "auth". A short pause reproduces Node's pacing; real clients need none.
	time.AfterFunc(10*time.Millisecond, func() {
		e.writePacket(&socketio.Packet{Type: socketio.Event, Nsp: nsp, ID: socketio.NoAck, Data: eventData("auth", auth)})
	})
}

func (echoApp) event(s *socket, p *socketio.Packet) {
	if s.nsp != "/" {
		return
	}
	args := p.EventArgs()
	switch p.EventName() {
	case "message":
		s.e.writePacket(&socketio.Packet{Type: p.Type, Nsp: s.nsp, ID: socketio.NoAck,
			Data: eventData("message-back", args...), Attachments: p.Attachments})
	case "message-with-ack":
		if p.ID == socketio.NoAck {
			return
		}
		typ := socketio.Ack
		if p.Type == socketio.BinaryEvent {
			typ = socketio.BinaryAck
		}
		data := []byte{'['}
		for i, a := range args {
			if i > 0 {
				data = append(data, ',')
			}
			data = append(data, a...)
		}
		s.e.writePacket(&socketio.Packet{Type: typ, Nsp: s.nsp, ID: p.ID, Data: append(data, ']'), Attachments: p.Attachments})
	}
}

func (echoApp) deadline(*socket) {}
