package node

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/node/engineio"
	"github.com/messaging-hub/hubnode/node/socketio"
)

const (
	reasonClientDisconnect = "client namespace disconnect"
	// roomTimeout bounds how long authentication waits for the adapter to
	// subscribe the user's room.
	roomTimeout = 5 * time.Second
)

// UserRoom is the room of a user's sockets, as the guide names it.
func UserRoom(userID string) string { return "user:" + userID }

// socket is a client's Socket.IO connection to the main namespace.
type socket struct {
	n   *Node
	e   *engineSession
	id  string // public socket id, never the engine sid
	pid string // the private session id of recovery; empty when recovery is off
	nsp string
	rec recoveryState
	// userRoom is set once, before the socket enters any room index, and
	// read by deliveries through the index.
	userRoom string

	mu      sync.Mutex
	closed  bool
	user    identity // zero until authenticated
	expiry  *time.Timer
	acks    map[int64]func(args []json.RawMessage)
	nextAck int64
	limiter *eventLimiter // nil until the first event
}

// app is what runs on the Socket.IO layer: which namespaces exist and what
// a CONNECT, an event and the AUTH_TIMEOUT deadline do. hubApp is the
// guide's service; the conformance server plugs in an echo.
type app interface {
	connect(e *engineSession, nsp string, auth json.RawMessage)
	event(s *socket, p *socketio.Packet)
	deadline(s *socket)
}

// hubApp is the guide's service on the main namespace.
type hubApp struct{ n *Node }

func (a hubApp) event(s *socket, p *socketio.Packet) {
	if s.allowEvent(p.ID) {
		s.onEvent(p)
	}
}

func (a hubApp) deadline(s *socket) { s.authTimedOut() }

// connect answers a CONNECT. A token in the auth payload is verified before
// the reply; without one the socket must send `authenticate` before
// AUTH_TIMEOUT.
func (a hubApp) connect(e *engineSession, nsp string, auth json.RawMessage) {
	n := a.n
	if nsp != "/" {
		e.writePacket(&socketio.Packet{Type: socketio.ConnectError, Nsp: nsp, ID: socketio.NoAck, Data: messageJSON("Invalid namespace")})
		return
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(auth, &fields) // the decoder admitted only an object or nothing
	s := newSocket(n, e, nsp)
	s.preparePID(fields)
	raw, hasToken := fields["token"]
	var id identity
	if hasToken {
		var token string
		_ = json.Unmarshal(raw, &token)
		var err error
		if id, err = n.verifier.verify(token); err != nil {
			n.authFailed(err)
			e.writePacket(&socketio.Packet{Type: socketio.ConnectError, ID: socketio.NoAck, Data: messageJSON(err.(*authError).Message)})
			return
		}
	}
	e.attach(s)
	if hasToken {
		if err := s.join(id); err != nil {
			e.detach(s)
			e.writePacket(&socketio.Packet{Type: socketio.ConnectError, ID: socketio.NoAck, Data: messageJSON(msgUnavailable)})
			return
		}
		if !s.loadRecovery() {
			return
		}
	}
	s.sendConnectReply()
	if hasToken {
		s.emit("authenticated", authenticatedPayload{UserID: id.UserID, Email: id.Email})
		s.finishRecovery()
	} else { // a socket after a DISCONNECT gets its own full deadline
		e.restartAuthTimer()
	}
}

func newSocket(n *Node, e *engineSession, nsp string) *socket {
	return &socket{n: n, e: e, id: engineio.NewID(), nsp: nsp}
}

// sendConnectReply answers CONNECT with the socket's public id.
func (s *socket) sendConnectReply() {
	reply := struct {
		SID string `json:"sid"`
		PID string `json:"pid,omitempty"` // only with recovery on: the client treats a pid as a promise
	}{s.id, s.pid}
	s.e.writePacket(&socketio.Packet{Type: socketio.Connect, Nsp: s.nsp, ID: socketio.NoAck, Data: mustJSON(reply)})
}

const msgUnavailable = "Service temporarily unavailable"

type authenticatedPayload struct {
	UserID string `json:"userId"`
	Email  string `json:"email"`
}

// The acks of a client event: {ok:true, userId, email} or {ok:false, error}.
type okAck struct {
	OK     bool   `json:"ok"`
	UserID string `json:"userId"`
	Email  string `json:"email"`
}

type failAck struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// onEvent handles an event from the client. Only `authenticate` is part of
// the guide; everything else is answered with an `error` event.
func (s *socket) onEvent(p *socketio.Packet) {
	name := p.EventName()
	if name == "authenticate" {
		s.onAuthenticate(p)
		return
	}
	msg, code := "Unknown event: "+name, "UNKNOWN_EVENT"
	if !s.authenticated() {
		msg, code = "Not authenticated", "UNAUTHENTICATED"
	}
	s.emit("error", errorPayload{Error: msg, Code: code, stamped: stamped{timestamp(time.Now())}})
	s.ack(p.ID, failAck{Error: msg})
}

func (s *socket) onAuthenticate(p *socketio.Packet) {
	var body struct {
		Token string `json:"token"`
	}
	var id identity
	var err error
	if args := p.EventArgs(); len(args) == 0 || json.Unmarshal(args[0], &body) != nil || body.Token == "" {
		err = &authError{msgTokenRequired, "missing_token"}
	} else {
		id, err = s.n.verifier.verify(body.Token)
	}
	if err != nil {
		s.n.authFailed(err)
		s.refuse(err.(*authError).Message, p.ID)
		return
	}
	s.mu.Lock()
	current := s.user
	if current.UserID == id.UserID {
		s.user.Expires = id.Expires // a refresh of the same user
		s.armExpiryLocked()
	}
	s.mu.Unlock()
	switch {
	case current.UserID == "":
		if err := s.join(id); err != nil {
			s.emit("auth_error", messagePayload{Message: msgUnavailable})
			s.ack(p.ID, failAck{Error: msgUnavailable})
			s.e.close(reasonTransportClose) // transient: let the client reconnect
			return
		}
		if !s.loadRecovery() {
			return
		}
	case current.UserID != id.UserID:
		s.emit("auth_error", messagePayload{Message: msgOtherUser})
		s.ack(p.ID, failAck{Error: msgOtherUser})
		return
	}
	s.emit("authenticated", authenticatedPayload{UserID: id.UserID, Email: id.Email})
	s.ack(p.ID, okAck{OK: true, UserID: id.UserID, Email: id.Email})
	s.finishRecovery()
}

// refuse tells the client why, then disconnects it with a DISCONNECT packet
// so it does not loop reconnecting with a bad token.
func (s *socket) refuse(message string, ackID int64) {
	s.emit("auth_error", messagePayload{Message: message})
	s.ack(ackID, failAck{Error: message})
	s.disconnect(true)
}

func (s *socket) authTimedOut() {
	if s.authenticated() {
		return
	}
	s.n.authFailed(&authError{msgAuthTimeout, "timeout"})
	s.refuse(msgAuthTimeout, socketio.NoAck)
}

// join indexes the socket under its user, waits until the adapter receives
// the user's room, and records presence. Only then may `authenticated` go
// out, so an emit issued after the client saw it cannot be missed.
func (s *socket) join(id identity) error {
	n := s.n
	name := UserRoom(id.UserID)
	s.userRoom = name
	if s.rec.offset != "" && !offsetOfRoom(s.rec.offset, name) {
		s.rec.offset = "" // another user's offset: nothing of theirs is replayed
	}
	s.holdIfRecovering()
	r, first := n.rooms.join(name, s)
	ctx, cancel := context.WithTimeout(context.Background(), roomTimeout)
	defer cancel()
	if first {
		r.markReady(n.adapter.AddRoom(ctx, name))
		n.users.Add(1)
	}
	var err error
	select {
	case <-r.ready:
		err = r.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		err = n.presence.Add(ctx, id.UserID, s.connKey())
	}
	if err != nil {
		n.log.Warn("cannot register authenticated socket", zap.String("user", id.UserID), zap.Error(err))
		n.leaveRoom(name, s)
		return err
	}
	// Under s.mu, so that a concurrent close either sees the user (and
	// undoes all of this) or happens first (and we undo it here).
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.user = id
		s.armExpiryLocked()
		n.mu.Lock()
		n.authed[s] = struct{}{}
		n.mu.Unlock()
	}
	s.mu.Unlock()
	if closed { // the connection ended while we waited
		n.leaveRoom(name, s)
		_ = n.presence.Remove(ctx, id.UserID, s.connKey())
		return errors.New("socket closed during authentication")
	}
	s.e.stopAuthTimer()
	return nil
}

func (n *Node) leaveRoom(name string, s *socket) {
	if n.rooms.leave(name, s) {
		n.users.Add(-1)
		n.adapter.DelRoom(name)
	}
}

// connKey names this connection in presence. Not the public sid: a
// recovered socket keeps its sid, and may do so while its old connection
// has not been reaped yet; both must count, and each leave remove its own.
func (s *socket) connKey() string { return s.e.id + "." + s.id }

func (s *socket) authenticated() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user.UserID != ""
}

// emit sends one event to this socket alone.
func (s *socket) emit(name string, payload any) {
	if s.nsp == "/" {
		s.e.writeFrame(socketio.AppendEvent([]byte{'0' + byte(engineio.Message)}, name, mustJSON(payload)))
		return
	}
	s.e.writePacket(&socketio.Packet{Type: socketio.Event, Nsp: s.nsp, ID: socketio.NoAck, Data: eventData(name, mustJSON(payload))})
}

// eventData is the JSON array of an event: [name, args...].
func eventData(name string, args ...json.RawMessage) []byte {
	return socketio.AppendEvent(nil, name, args...)[1:] // drop the type digit
}

// emitWithAck sends an event that the client acknowledges; cb receives the
// client's ack arguments. It is dropped if the socket closes first.
func (s *socket) emitWithAck(name string, cb func([]json.RawMessage), args ...json.RawMessage) {
	s.mu.Lock()
	if s.acks == nil {
		s.acks = make(map[int64]func([]json.RawMessage))
	}
	id := s.nextAck
	s.nextAck++
	s.acks[id] = cb
	s.mu.Unlock()
	s.e.writePacket(&socketio.Packet{Type: socketio.Event, Nsp: s.nsp, ID: id, Data: eventData(name, args...)})
}

// onAck delivers a client's acknowledgement; unknown ids are ignored.
func (s *socket) onAck(p *socketio.Packet) {
	s.mu.Lock()
	cb := s.acks[p.ID]
	delete(s.acks, p.ID)
	s.mu.Unlock()
	if cb == nil {
		return
	}
	var args []json.RawMessage
	_ = json.Unmarshal(p.Data, &args)
	cb(args)
}

// ack answers a client's event that asked for an acknowledgement.
func (s *socket) ack(id int64, payload any) {
	if id == socketio.NoAck {
		return
	}
	data := append(append([]byte{'['}, mustJSON(payload)...), ']')
	s.e.writePacket(&socketio.Packet{Type: socketio.Ack, Nsp: s.nsp, ID: id, Data: data})
}

// disconnect sends DISCONNECT, so the client stays disconnected, and with
// closeTransport also ends the connection.
func (s *socket) disconnect(closeTransport bool) {
	s.e.writePacket(&socketio.Packet{Type: socketio.Disconnect, Nsp: s.nsp, ID: socketio.NoAck})
	s.close(reasonServerDisconnct)
	if closeTransport {
		s.e.close(reasonServerDisconnct)
	}
}

// close forgets the socket: rooms, presence, pending acks.
func (s *socket) close(reason string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	user := s.user
	s.acks = nil
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.mu.Unlock()

	s.e.detach(s)
	if user.UserID == "" {
		return
	}
	n := s.n
	n.mu.Lock()
	delete(n.authed, s)
	n.mu.Unlock()
	n.leaveRoom(UserRoom(user.UserID), s)
	ctx, cancel := context.WithTimeout(context.Background(), roomTimeout)
	defer cancel()
	if err := n.presence.Remove(ctx, user.UserID, s.connKey()); err != nil {
		n.log.Warn("cannot remove presence", zap.String("user", user.UserID), zap.Error(err))
	}
	n.log.Debug("socket closed", zap.String("user", user.UserID), zap.String("reason", reason))
}

func (n *Node) authFailed(err error) {
	var ae *authError
	if errors.As(err, &ae) {
		n.metrics.authFailure(ae.Reason)
		n.log.Debug("authentication refused", zap.String("reason", ae.Reason))
	}
}

type messagePayload struct {
	Message string `json:"message"`
}

func messageJSON(msg string) json.RawMessage { return mustJSON(messagePayload{Message: msg}) }

// mustJSON marshals values whose types cannot fail to marshal.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
