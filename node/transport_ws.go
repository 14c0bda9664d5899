package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
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
	probed  bool         // "2probe" seen; only the session's read goroutine touches it
	refused bool         // a second WebSocket for a session that has one: closed at once
	pending atomic.Int64 // messages queued in melody and not yet written
}

func (t *wsTransport) name() string               { return "websocket" }
func (t *wsTransport) writeText(b []byte) error   { t.pending.Add(1); return t.s.Write(b) }
func (t *wsTransport) writeBinary(b []byte) error { t.pending.Add(1); return t.s.WriteBinary(b) }
func (t *wsTransport) backlog() int               { return int(t.pending.Load()) }
func (t *wsTransport) close(bool)                 { _ = t.s.Close() } // the close frame follows what is queued
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
	// Idle connections hold no write buffer of their own, and read through
	// the small reader that hijackedWriter hands over.
	m.Upgrader.WriteBufferPool = &sync.Pool{}
	m.Upgrader.ReadBufferSize = 0

	m.HandleConnect(n.guard("connect", func(s *melody.Session) {
		t := transportOf(s)
		t.s = s
		s.Request = nil // nothing reads it after the upgrade; its headers would live as long as the connection
		if t.refused {
			t.close(true)
			return
		}
		if t.probing.Load() {
			if !t.e.beginUpgrade(t) {
				t.close(true)
			}
			return
		}
		if !n.track(t.e) {
			t.close(true)
			return
		}
		t.e.open(nil)
	}))
	sent := func(s *melody.Session, _ []byte) { transportOf(s).pending.Add(-1) }
	m.HandleSentMessage(sent)
	m.HandleSentMessageBinary(sent)
	m.HandleMessage(n.guardMsg("message", func(s *melody.Session, b []byte) { transportOf(s).onMessage(b, false) }))
	m.HandleMessageBinary(n.guardMsg("binary message", func(s *melody.Session, b []byte) { transportOf(s).onMessage(b, true) }))
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

// onMessage routes an inbound message: nowhere for a refused WebSocket, to
// the upgrade protocol while probing (where binary abandons the upgrade),
// to the session otherwise.
func (t *wsTransport) onMessage(b []byte, binary bool) {
	switch {
	case t.refused:
	case t.probing.Load() && binary:
		t.e.abortUpgrade(t)
	case t.probing.Load():
		t.e.onProbe(t, b)
	case binary:
		t.e.onBinary(b)
	default:
		t.e.onText(b)
	}
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

// guardMsg also runs each inbound message on a short-lived goroutine while
// melody's read loop waits: handling (token verification, JSON) grows a
// stack to several KiB, and the read loop, which lives as long as the
// connection, would keep that stack while idle.
func (n *Node) guardMsg(what string, fn func(*melody.Session, []byte)) func(*melody.Session, []byte) {
	return func(s *melody.Session, b []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer n.recoverSession(what, s)
			fn(s, b)
		}()
		<-done
	}
}

func (n *Node) recoverSession(what string, s *melody.Session) {
	if r := recover(); r != nil {
		n.metrics.panics.Add(1)
		n.log.Error("panic in session handler", zap.String("handler", what), zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
		_ = s.WebsocketConnection().Close()
	}
}

// serveWebSocket upgrades a checked request and runs the connection: a new
// session, or (upgrade set) the probe of a polling session's upgrade, or
// (refuse set) a WebSocket closed at once, as Node treats a second upgrade
// of one session.
//
// melody runs a connection inside the handler that upgraded it, which would
// pin net/http's per-request state (its 4 KiB read and write buffers, the
// request, gin's context) for the connection's whole life. So the handler
// hijacks the connection itself, returns, and melody runs on a fresh
// goroutine with a trimmed request and small buffers.
func (n *Node) serveWebSocket(w http.ResponseWriter, r *http.Request, upgrade *engineSession, refuse bool) {
	t := &wsTransport{e: upgrade, refused: refuse}
	switch {
	case refuse:
	case upgrade == nil:
		t.e = newEngineSession(n, t)
	default:
		t.probing.Store(true)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "websocket: connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	header := w.Header().Clone() // CORS headers go on the 101 response too
	conn, brw, err := hj.Hijack()
	if err != nil {
		n.log.Debug("hijack failed", zap.Error(err))
		return
	}
	if brw.Reader.Buffered() > 0 { // data before the handshake completed
		_ = conn.Close()
		return
	}
	hw := &hijackedWriter{conn: conn, header: header}
	req := &http.Request{
		Method: r.Method, URL: r.URL, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: r.Header, Host: r.Host, RemoteAddr: r.RemoteAddr,
	}
	go func() {
		if err := n.melody.HandleRequestWithKeys(hw, req, map[string]any{transportKey: t}); err != nil {
			n.log.Debug("websocket upgrade failed", zap.Error(err))
			_ = conn.Close()
		}
	}()
}

// hijackedWriter hands gorilla an already-hijacked connection with small
// buffers: a 512-byte reader that gorilla keeps as the connection's read
// buffer (ReadBufferSize 0), and a writer used only for the 101 response.
type hijackedWriter struct {
	conn   net.Conn
	header http.Header
	status int
}

func (h *hijackedWriter) Header() http.Header { return h.header }

// Write and WriteHeader serve gorilla's error answers before it hijacks.
func (h *hijackedWriter) WriteHeader(status int) { h.status = status }

func (h *hijackedWriter) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	resp := &http.Response{StatusCode: h.status, ProtoMajor: 1, ProtoMinor: 1, Header: h.header,
		Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b)), Close: true}
	err := resp.Write(h.conn)
	_ = h.conn.Close()
	return len(b), err
}

func (h *hijackedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReaderSize(h.conn, 512), bufio.NewWriterSize(h.conn, 512)), nil
}
