package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/node/engineio"
	"github.com/messaging-hub/hubnode/node/socketio"
	"github.com/messaging-hub/hubnode/presence"
)

// Service is the guide's websocketService for Go callers: it emits the
// guide's events to a user's sockets, wherever in the cluster they are, and
// reports presence. The HTTP API is a thin layer over the same methods.
type Service struct {
	n *Node
}

// Emit sends event with data (any JSON-marshalable value; json.RawMessage
// passes through untouched; nil sends the event without argument) to every
// socket of userID.
func (sv *Service) Emit(ctx context.Context, userID, event string, data any) error {
	if data == nil { // an event with no argument
		_, err := sv.emitArgs(ctx, "go", userID, event)
		return err
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return invalidf("data: %v", err)
	}
	_, err = sv.emitArgs(ctx, "go", userID, event, raw)
	return err
}

// EmitNewMessage sends new_message {message, conversation?, timestamp};
// conversation may be nil.
func (sv *Service) EmitNewMessage(ctx context.Context, userID string, message, conversation any) error {
	var p newMessagePayload
	var err error
	if p.Message, err = json.Marshal(message); err != nil {
		return invalidf("message: %v", err)
	}
	if conversation != nil {
		if p.Conversation, err = json.Marshal(conversation); err != nil {
			return invalidf("conversation: %v", err)
		}
	}
	_, err = sv.emitTyped(ctx, "go", userID, EventNewMessage, &p)
	return err
}

// EmitMessageStatusUpdate sends message_status_update, in the guide's argument order.
func (sv *Service) EmitMessageStatusUpdate(ctx context.Context, userID, messageID string, status MessageStatus, conversationID string) error {
	p := messageStatusPayload{MessageID: messageID, ConversationID: conversationID, Status: status}
	_, err := sv.emitTyped(ctx, "go", userID, EventMessageStatusUpdate, &p)
	return err
}

// EmitUnreadCountUpdate sends unread_count_update {unreadCounts, totalUnread, timestamp}.
func (sv *Service) EmitUnreadCountUpdate(ctx context.Context, userID string, unreadCounts map[string]int64, totalUnread int64) error {
	p := unreadCountPayload{UnreadCounts: unreadCounts, TotalUnread: totalUnread}
	_, err := sv.emitTyped(ctx, "go", userID, EventUnreadCountUpdate, &p)
	return err
}

// EmitConversationUpdate sends conversation_update {conversation, timestamp}.
func (sv *Service) EmitConversationUpdate(ctx context.Context, userID string, conversation any) error {
	var p conversationPayload
	var err error
	if p.Conversation, err = json.Marshal(conversation); err != nil {
		return invalidf("conversation: %v", err)
	}
	_, err = sv.emitTyped(ctx, "go", userID, EventConversationUpdate, &p)
	return err
}

// EmitError sends error {error, code?, timestamp}; code may be empty.
func (sv *Service) EmitError(ctx context.Context, userID, message, code string) error {
	p := errorPayload{Error: message, Code: code}
	_, err := sv.emitTyped(ctx, "go", userID, EventError, &p)
	return err
}

// GetStats returns the connection figures of everything this node's
// presence sees: the node alone, or the whole cluster.
func (sv *Service) GetStats(ctx context.Context) (presence.Stats, error) {
	return sv.n.presence.Stats(ctx)
}

// IsUserConnected reports whether userID has an authenticated connection.
func (sv *Service) IsUserConnected(ctx context.Context, userID string) (bool, error) {
	c, err := sv.GetUserConnectionCount(ctx, userID)
	return c > 0, err
}

// GetUserConnectionCount returns how many authenticated connections userID has.
func (sv *Service) GetUserConnectionCount(ctx context.Context, userID string) (int, error) {
	if err := checkUserID(userID); err != nil {
		return 0, err
	}
	return sv.n.presence.UserConnections(ctx, userID)
}

// DisconnectUser disconnects every socket of userID (e.g. on logout). The
// clients receive a DISCONNECT and do not reconnect by themselves.
func (sv *Service) DisconnectUser(ctx context.Context, userID string) error {
	if err := checkUserID(userID); err != nil {
		return err
	}
	return sv.n.adapter.DisconnectSockets(ctx, []string{UserRoom(userID)}, true)
}

// emitTyped validates and timestamps one of the guide's payloads, then emits it.
// It returns the event's offset in the user's history ("" without recovery).
func (sv *Service) emitTyped(ctx context.Context, door, userID, event string, p typedPayload) (string, error) {
	if p.preset() {
		return "", invalidf("timestamp is set by the server")
	}
	if err := p.validate(); err != nil {
		return "", err
	}
	p.stamp(timestamp(time.Now()))
	return sv.emitArgs(ctx, door, userID, event, mustJSON(p))
}

// emit is the one emit path of every door: the frame is encoded once here
// and the same bytes are written to every local socket of the user.
func (sv *Service) emitArgs(ctx context.Context, door, userID, event string, args ...json.RawMessage) (string, error) {
	msg, err := sv.prepare(userID, event, args...)
	if err != nil {
		return "", err
	}
	err = sv.broadcast(ctx, door, event, msg)
	return msg.Offset, err
}

// prepare validates an emit and encodes its frame, so a batch can be
// checked whole before anything is sent.
func (sv *Service) prepare(userID, event string, args ...json.RawMessage) (*adapter.Message, error) {
	if err := checkUserID(userID); err != nil {
		return nil, err
	}
	if err := checkEventName(event); err != nil {
		return nil, err
	}
	frame := socketio.AppendEvent([]byte{'0' + byte(engineio.Message)}, event, args...)
	if int64(len(frame)) > sv.n.opts.MaxPayload {
		return nil, invalidf("event is %d bytes encoded, above MAX_PAYLOAD (%d)", len(frame), sv.n.opts.MaxPayload)
	}
	// A WebSocket text frame must be valid UTF-8, or browsers drop the
	// connection; encoding/json does not check raw JSON for it.
	if !utf8.Valid(frame) {
		return nil, invalidf("event data is not valid UTF-8")
	}
	return &adapter.Message{
		Nsp:    "/",
		Rooms:  []string{UserRoom(userID)},
		Data:   append([]json.RawMessage{mustJSON(event)}, args...),
		Frame:  frame,
		Record: sv.n.history() != nil,
	}, nil
}

// broadcast sends a prepared emit through the adapter.
func (sv *Service) broadcast(ctx context.Context, door, event string, msg *adapter.Message) error {
	n := sv.n
	if err := n.adapter.Broadcast(ctx, msg); err != nil {
		n.metrics.emitFailures.Add(1)
		return fmt.Errorf("emit %s to %s: %w", event, msg.Rooms[0], err)
	}
	n.metrics.emitted(door, event)
	return nil
}

// DeliverLocal implements adapter.Handler: one frame, written to each
// matching local socket.
func (n *Node) DeliverLocal(msg *adapter.Message) {
	frame := msg.Frame
	if frame == nil {
		frame = encodeMessage(msg)
	}
	// Except names rooms, as in Socket.IO: a socket is skipped when its
	// own id (its private room) or its user's room is listed.
	var except map[string]bool
	if len(msg.Except) > 0 {
		except = make(map[string]bool, len(msg.Except))
		for _, room := range msg.Except {
			except[room] = true
		}
	}
	delivered := 0
	write := func(s *socket) {
		if except != nil && (except[s.id] || except[s.userRoom]) {
			return
		}
		s.deliver(frame, msg.Attachments, msg.Offset)
		delivered++
	}
	switch len(msg.Rooms) {
	case 0: // every authenticated socket
		n.mu.Lock()
		for s := range n.authed {
			write(s)
		}
		n.mu.Unlock()
	case 1:
		n.rooms.each(msg.Rooms[0], write)
	default: // a socket in several of the rooms gets one copy
		seen := make(map[*socket]bool)
		for _, r := range msg.Rooms {
			n.rooms.each(r, func(s *socket) {
				if !seen[s] {
					seen[s] = true
					write(s)
				}
			})
		}
	}
	n.metrics.broadcast(msg, delivered)
}

// encodeMessage builds the Engine.IO frame of a message that arrived
// without one (from another node): 42[<data0>,...], or 45<n>-[...] when
// binary attachments follow.
func encodeMessage(msg *adapter.Message) []byte {
	p := socketio.Packet{Type: socketio.Event, ID: socketio.NoAck, Attachments: msg.Attachments}
	if len(msg.Attachments) > 0 {
		p.Type = socketio.BinaryEvent
	}
	size := 16 + len(msg.Data) // header, brackets and commas: one allocation per frame
	for _, d := range msg.Data {
		size += len(d)
	}
	frame := socketio.AppendEncode(append(make([]byte, 0, size), '0'+byte(engineio.Message)), &p)
	frame = append(frame, '[')
	for i, d := range msg.Data {
		if i > 0 {
			frame = append(frame, ',')
		}
		frame = append(frame, d...)
	}
	return append(frame, ']')
}

// DisconnectLocal implements adapter.Handler.
func (n *Node) DisconnectLocal(rooms, except []string, closeTransport bool) {
	var targets []*socket
	for _, r := range rooms {
		n.rooms.each(r, func(s *socket) {
			if !slices.Contains(except, s.id) && !slices.Contains(except, s.userRoom) {
				targets = append(targets, s)
			}
		})
	}
	for _, s := range targets {
		s.disconnect(closeTransport)
	}
}
