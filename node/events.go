package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/messaging-hub/hubnode/node/socketio"
)

// The guide's server→client events.
const (
	EventNewMessage          = "new_message"
	EventMessageStatusUpdate = "message_status_update"
	EventUnreadCountUpdate   = "unread_count_update"
	EventConversationUpdate  = "conversation_update"
	EventError               = "error"
)

// MessageStatus is the status carried by message_status_update.
type MessageStatus string

// The statuses the guide defines.
const (
	StatusRead      MessageStatus = "read"
	StatusDelivered MessageStatus = "delivered"
)

// ErrInvalid matches (errors.Is) every refusal of a caller's input; the
// HTTP API answers those with 400.
var ErrInvalid = errors.New("invalid input")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Sprintf(format, args...)}
}

// timestamp formats t as JavaScript's toISOString does: UTC, milliseconds, "Z".
func timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// The payloads, field for field as the guide types them. The hub's message
// and conversation objects pass through as raw JSON, untouched.
type newMessagePayload struct {
	Message      json.RawMessage `json:"message"`
	Conversation json.RawMessage `json:"conversation,omitempty"`
	stamped
}

type messageStatusPayload struct {
	MessageID      string        `json:"messageId"`
	ConversationID string        `json:"conversationId"`
	Status         MessageStatus `json:"status"`
	stamped
}

type unreadCountPayload struct {
	UnreadCounts map[string]int64 `json:"unreadCounts"`
	TotalUnread  int64            `json:"totalUnread"`
	stamped
}

type conversationPayload struct {
	Conversation json.RawMessage `json:"conversation"`
	stamped
}

type errorPayload struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
	stamped
}

// stamped is the timestamp every guide event ends with. The server sets it:
// a caller that sends one is refused rather than silently overridden.
type stamped struct {
	Timestamp string `json:"timestamp"`
}

func (s *stamped) stamp(ts string) { s.Timestamp = ts }
func (s *stamped) preset() bool    { return s.Timestamp != "" }

// typedPayload is one of the guide's event payloads.
type typedPayload interface {
	validate() error
	stamp(ts string)
	preset() bool
}

// validate checks each payload against the guide's types before it is sent.
func (p *newMessagePayload) validate() error {
	if err := requireObject("message", p.Message); err != nil {
		return err
	}
	if p.Conversation != nil && string(p.Conversation) != "null" {
		return requireObject("conversation", p.Conversation)
	}
	p.Conversation = nil
	return nil
}

func (p *messageStatusPayload) validate() error {
	switch {
	case p.MessageID == "":
		return invalidf("messageId is required")
	case p.ConversationID == "":
		return invalidf("conversationId is required")
	case p.Status != StatusRead && p.Status != StatusDelivered:
		return invalidf("status must be %q or %q, got %q", StatusRead, StatusDelivered, p.Status)
	}
	return nil
}

func (p *unreadCountPayload) validate() error {
	if p.UnreadCounts == nil {
		return invalidf("unreadCounts is required (an object of platform to count)")
	}
	for platform, n := range p.UnreadCounts {
		if n < 0 {
			return invalidf("unreadCounts.%s must not be negative", platform)
		}
	}
	if p.TotalUnread < 0 {
		return invalidf("totalUnread must not be negative")
	}
	return nil
}

func (p *conversationPayload) validate() error { return requireObject("conversation", p.Conversation) }

func (p *errorPayload) validate() error {
	if p.Error == "" {
		return invalidf("error is required")
	}
	return nil
}

func requireObject(field string, v json.RawMessage) error {
	if len(v) == 0 || v[0] != '{' {
		return invalidf("%s must be a JSON object", field)
	}
	return nil
}

// checkEventName refuses what the JavaScript client cannot receive.
func checkEventName(name string) error {
	switch {
	case name == "":
		return invalidf("event is required")
	case socketio.IsReserved(name):
		return invalidf("event %q is reserved by Socket.IO", name)
	case len(name) > 256:
		return invalidf("event name longer than 256 bytes")
	}
	return nil
}

func checkUserID(id string) error {
	switch {
	case id == "":
		return invalidf("userId is required")
	case len(id) > 256:
		return invalidf("userId longer than 256 bytes")
	}
	return nil
}
