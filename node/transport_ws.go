package node

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"go.uber.org/zap"
)

// sessionKey is where a melody session keeps its engine session.
const sessionKey = "engine"

// wsTransport carries an engine session over one melody WebSocket session.
type wsTransport struct {
	s *melody.Session
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
		e := engineOf(s)
		e.tr.(*wsTransport).s = s
		if !n.track(e) {
			_ = s.Close()
			return
		}
		e.open(nil)
	}))
	m.HandleMessage(n.guardMsg("message", func(s *melody.Session, b []byte) { engineOf(s).onText(b) }))
	m.HandleMessageBinary(n.guardMsg("binary message", func(s *melody.Session, b []byte) { engineOf(s).onBinary(b) }))
	m.HandleDisconnect(n.guard("disconnect", func(s *melody.Session) {
		e := engineOf(s)
		e.transportClosed()
		n.untrack(e)
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

func engineOf(s *melody.Session) *engineSession {
	v, _ := s.Get(sessionKey)
	return v.(*engineSession)
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

// serveWebSocket upgrades a checked request and runs the session until it ends.
func (n *Node) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	e := newEngineSession(n, &wsTransport{})
	if err := n.melody.HandleRequestWithKeys(w, r, map[string]any{sessionKey: e}); err != nil {
		n.log.Debug("websocket upgrade failed", zap.Error(err))
	}
}
