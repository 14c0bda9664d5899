package node

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// --- Expiry of long-lived connections ---

const testGrace = 200 * time.Millisecond

// shortToken is SignToken with a 1 s TTL, signed at the start of a second
// so that exp (whole seconds) is a full second ahead, not a few ms.
func shortToken(t *testing.T, user, email string) (string, time.Time) {
	t.Helper()
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 10*time.Millisecond).Sub(now))
	token := mustToken(t, user, email, time.Second)
	exp, _, err := jwt.NewParser().ParseUnverified(token, &jwt.RegisteredClaims{})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := exp.Claims.GetExpirationTime()
	return token, e.Time
}

func expiryNode(t *testing.T, grace time.Duration) *testNode {
	return newTestNode(t, func(o *Options) { o.Auth.ExpiryGrace = grace })
}

// expectExpiredAt expects auth_error "Token expired" and a DISCONNECT at
// about deadline, not before.
func expectExpiredAt(t *testing.T, c *wsClient, deadline time.Time) {
	t.Helper()
	c.expect(`42["auth_error",{"message":"Token expired"}]`)
	if early := time.Until(deadline); early > 20*time.Millisecond {
		t.Errorf("disconnected %v before exp + grace", early)
	} else if late := -early; late > time.Second {
		t.Errorf("disconnected %v after exp + grace", late)
	}
	c.expect(`41`)
	c.expectClosed()
}

func TestTokenExpiryDisconnects(t *testing.T) {
	t.Parallel() // each waits for expiries of its own node
	tn := expiryNode(t, testGrace)
	ctx := context.Background()

	t.Run("authenticate", func(t *testing.T) {
		token, exp := shortToken(t, "u1", "e@x")
		c := tn.connect(t)
		c.authenticate(token, "u1", "e@x")
		time.Sleep(time.Until(exp) + testGrace/4) // expired, within the grace
		if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); !ok {
			t.Fatal("u1 disconnected during the grace")
		}
		expectExpiredAt(t, c, exp.Add(testGrace))
		eventually(t, "u1 no longer connected", func() bool {
			ok, _ := tn.n.Service().IsUserConnected(ctx, "u1")
			return !ok
		})
	})
	t.Run("token in the CONNECT auth", func(t *testing.T) {
		token, exp := shortToken(t, "u2", "f@x")
		c := tn.dial(t, nil)
		c.send(`40{"token":"` + token + `"}`)
		c.expectConnectReply()
		c.expect(`42["authenticated",{"userId":"u2","email":"f@x"}]`)
		expectExpiredAt(t, c, exp.Add(testGrace))
	})
	t.Run("a token of another user does not refresh", func(t *testing.T) {
		token, exp := shortToken(t, "u3", "g@x")
		c := tn.connect(t)
		c.authenticate(token, "u3", "g@x")
		c.send(`42["authenticate",{"token":"` + mustToken(t, "u4", "h@x", time.Hour) + `"}]`)
		c.expect(`42["auth_error",{"message":"Already authenticated as another user"}]`)
		expectExpiredAt(t, c, exp.Add(testGrace))
	})
	if got := metricValue(t, tn, `hubnode_auth_failures_total{reason="session_expired"}`); got != "3" {
		t.Errorf("session_expired failures = %s, want 3", got)
	}
}

func TestTokenExpiryRefresh(t *testing.T) {
	t.Parallel() // each waits for expiries of its own node
	tn := expiryNode(t, testGrace)
	ctx := context.Background()

	t.Run("before exp", func(t *testing.T) {
		token, exp := shortToken(t, "u1", "e@x")
		c := tn.connect(t)
		c.authenticate(token, "u1", "e@x")
		c.send(`421["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
		c.expect(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
		c.expect(`431[{"ok":true,"userId":"u1","email":"e@x"}]`)
		time.Sleep(time.Until(exp.Add(testGrace + 300*time.Millisecond)))
		c.expectNothing()
		if err := tn.n.Service().Emit(ctx, "u1", "still", 1); err != nil {
			t.Fatal(err)
		}
		c.expect(`42["still",1]`)
	})
	t.Run("during the grace, then the new token expires too", func(t *testing.T) {
		token, exp := shortToken(t, "u2", "f@x")
		c := tn.connect(t)
		c.authenticate(token, "u2", "f@x")
		time.Sleep(time.Until(exp) + testGrace/4)
		// The refresh re-arms the timer for the new token's exp (whole
		// seconds: exp + 2 s).
		c.authenticate(mustToken(t, "u2", "f@x", 2*time.Second), "u2", "f@x")
		exp2 := exp.Add(2 * time.Second)
		time.Sleep(time.Until(exp.Add(testGrace + 100*time.Millisecond)))
		c.expectNothing()
		expectExpiredAt(t, c, exp2.Add(testGrace))
	})
	t.Run("an expired token does not refresh", func(t *testing.T) {
		token, _ := shortToken(t, "u3", "g@x")
		c := tn.connect(t)
		c.authenticate(token, "u3", "g@x")
		c.send(`42["authenticate",{"token":"` + mustToken(t, "u3", "g@x", -time.Minute) + `"}]`)
		c.expect(`42["auth_error",{"message":"Token expired"}]`)
		c.expect(`41`)
		c.expectClosed()
	})
}

func TestTokenExpiryNoGrace(t *testing.T) {
	t.Parallel() // each waits for expiries of its own node
	tn := expiryNode(t, 0)
	token, exp := shortToken(t, "u1", "e@x")
	c := tn.connect(t)
	c.authenticate(token, "u1", "e@x")
	expectExpiredAt(t, c, exp)
}

// TestTokenExpiryTimerStoppedOnClose: a socket that leaves before its
// token expires leaves no timer that fires.
func TestTokenExpiryTimerStoppedOnClose(t *testing.T) {
	t.Parallel() // each waits for expiries of its own node
	tn := expiryNode(t, 0)
	token, exp := shortToken(t, "u1", "e@x")
	c := tn.connect(t)
	c.authenticate(token, "u1", "e@x")
	var s *socket
	tn.n.mu.Lock()
	for a := range tn.n.authed {
		s = a
	}
	tn.n.mu.Unlock()
	c.close()
	eventually(t, "the socket closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	})
	s.mu.Lock()
	stopped := !s.expiry.Stop() // false: already stopped by close
	s.mu.Unlock()
	if !stopped {
		t.Error("the expiry timer was still running after close")
	}
	time.Sleep(time.Until(exp) + 100*time.Millisecond)
	if got := metricValue(t, tn, `hubnode_auth_failures_total{reason="session_expired"}`); got != "absent" {
		t.Errorf("session_expired failures = %s after the socket left", got)
	}
	// Leaving the namespace (41) closes the socket the same way.
	token, exp = shortToken(t, "u2", "f@x")
	c = tn.connect(t)
	c.authenticate(token, "u2", "f@x")
	c.send("41")
	time.Sleep(time.Until(exp) + 100*time.Millisecond)
	if got := metricValue(t, tn, `hubnode_auth_failures_total{reason="session_expired"}`); got != "absent" {
		t.Errorf("session_expired failures = %s after 41", got)
	}
}
