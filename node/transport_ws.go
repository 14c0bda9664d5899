package node

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"go.uber.org/zap"
)

// transportKey is where a melody session keeps its wsTransport.
const transportKey = "transport"

// wsTransport carries an engine session over one melody WebSocket session.
// While probing it is the candidate of a polling session's upgrade, not yet
// its transport.
type wsTransport struct {
	e       *engineSession
	s       *melody.Session
	probing atomic.Bool
	probed  bool // "2probe" seen; only the session's read goroutine touches it
	refused bool // a second WebSocket for a session that has one: closed at once
}

func (t *wsTransport) name() string               { return "websocket" }
func (t *wsTransport) writeText(b []byte) error   { return t.s.Write(b) }
func (t *wsTransport) writeBinary(b []byte) error { return t.s.WriteBinary(b) }
func (t *wsTransport) close()                     { _ = t.s.Close() }
func (t *wsTransport) abort()                     { _ = t.s.WebsocketConnection().Close() }

// newMelody configures the WebSocket transport.
func (n *Node) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = n.opts.MaxPayload
	// melody drops messages silently when this queue is full; the error
	// handler below closes the connection instead, so nothing is lost unseen.
	m.Config.MessageBufferSize = n.opts.WriteQueue
	// The Origin is checked before the upgrade, where a clear error can be sent.
	m.Upgrader.CheckOrigin = func(*http.Request) bool { return true }
	// Idle connections hold no write buffer of their own.
	m.Upgrader.WriteBufferPool = &sync.Pool{}

	m.HandleConnect(n.guard("connect", func(s *melody.Session) {
		t := transportOf(s)
		t.s = s
		if t.refused {
			t.close()
			return
		}
		if t.probing.Load() {
			if !t.e.beginUpgrade(t) {
				t.close()
			}
			return
		}
		if !n.track(t.e) {
			t.close()
			return
		}
		t.e.open(nil)
	}))
	m.HandleMessage(n.guardMsg("message", func(s *melody.Session, b []byte) {
		t := transportOf(s)
		if t.refused {
			return
		}
		if t.probing.Load() {
			t.e.onProbe(t, b)
			return
		}
		t.e.onText(b)
	}))
	m.HandleMessageBinary(n.guardMsg("binary message", func(s *melody.Session, b []byte) {
		t := transportOf(s)
		if t.refused {
			return
		}
		if t.probing.Load() {
			t.e.abortUpgrade(t)
			return
		}
		t.e.onBinary(b)
	}))
	m.HandleDisconnect(n.guard("disconnect", func(s *melody.Session) {
		t := transportOf(s)
		if t.refused {
			return
		}
		if t.probing.Load() {
			t.e.abortUpgrade(t)
			return
		}
		t.e.transportClosed(t)
	}))
	m.HandleError(func(s *melody.Session, err error) {
		switch {
		case errors.Is(err, melody.ErrMessageBufferFull):
			// A slow consumer: cut it so the client reconnects, rather than
			// letting melody drop events or letting memory grow. Only the raw
			// connection is touched here: this runs inside a write call.
			n.metrics.slowConsumers.Add(1)
			_ = s.WebsocketConnection().Close()
		case errors.Is(err, melody.ErrWriteClosed), isNormalClose(err):
		default:
			n.log.Debug("websocket error", zap.Error(err))
		}
	})
	return m
}

func transportOf(s *melody.Session) *wsTransport {
	v, _ := s.Get(transportKey)
	return v.(*wsTransport)
}

func isNormalClose(err error) bool {
	return websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived)
}

// guard recovers a panic in a melody session handler: it is logged and the
// connection closed, instead of leaking the session or killing the process.
func (n *Node) guard(what string, fn func(*melody.Session)) func(*melody.Session) {
	return func(s *melody.Session) {
		defer n.recoverSession(what, s)
		fn(s)
	}
}

func (n *Node) guardMsg(what string, fn func(*melody.Session, []byte)) func(*melody.Session, []byte) {
	return func(s *melody.Session, b []byte) {
		defer n.recoverSession(what, s)
		fn(s, b)
	}
}

func (n *Node) recoverSession(what string, s *melody.Session) {
	if r := recover(); r != nil {
		n.metrics.panics.Add(1)
		n.log.Error("panic in session handler", zap.String("handler", what), zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
		_ = s.WebsocketConnection().Close()
	}
}

// serveWebSocket upgrades a checked request and runs the connection until it
// ends: a new session, or (upgrade set) the probe of a polling session's
// upgrade, or (refuse set) a WebSocket that is closed at once, as Node
// treats a second upgrade of one session.
func (n *Node) serveWebSocket(w http.ResponseWriter, r *http.Request, upgrade *engineSession, refuse bool) {
	t := &wsTransport{e: upgrade, refused: refuse}
	switch {
	case refuse:
	case upgrade == nil:
		t.e = newEngineSession(n, t)
	default:
		t.probing.Store(true)
	}
	if err := n.melody.HandleRequestWithKeys(w, r, map[string]any{transportKey: t}); err != nil {
		n.log.Debug("websocket upgrade failed", zap.Error(err))
	}
}
