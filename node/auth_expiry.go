package node

import (
	"time"

	"github.com/messaging-hub/hubnode/node/socketio"
)

// Expiry of long-lived connections: an authenticated socket whose token has
// expired (exp, plus Leeway as for verification) and that has not emitted
// authenticate with a newer token of the same user within ExpiryGrace gets
// auth_error "Token expired" and a DISCONNECT.

// armExpiryLocked (re)starts the socket's expiry timer for s.user.Expires;
// s.mu must be held. One timer per socket, stopped by close.
func (s *socket) armExpiryLocked() {
	d := time.Until(s.expiryDeadlineLocked())
	if s.expiry == nil {
		s.expiry = time.AfterFunc(d, s.tokenExpired)
		return
	}
	s.expiry.Reset(d)
}

func (s *socket) expiryDeadlineLocked() time.Time {
	return s.user.Expires.Add(s.n.opts.Auth.Leeway + s.n.opts.Auth.ExpiryGrace)
}

// tokenExpired runs on the timer. The deadline is checked again under the
// lock: a refresh that raced the timer wins, and a wall clock set back since
// the timer was armed re-arms it for the time left.
func (s *socket) tokenExpired() {
	s.mu.Lock()
	if s.closed || s.user.UserID == "" {
		s.mu.Unlock()
		return
	}
	if left := time.Until(s.expiryDeadlineLocked()); left > 0 {
		s.expiry.Reset(left)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.n.authFailed(&authError{msgTokenExpired, "session_expired"})
	s.refuse(msgTokenExpired, socketio.NoAck)
}
