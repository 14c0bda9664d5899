package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// --- 6. Authentication ---

func TestAuthenticateValidToken(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.connect(t)
	c.send(`42["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
	c.expect(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
	c.expectNothing()
	n, err := tn.n.Service().GetUserConnectionCount(context.Background(), "u1")
	if err != nil || n != 1 {
		t.Errorf("GetUserConnectionCount(u1) = %d, %v; want 1", n, err)
	}
}

func TestAuthenticateWithAck(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.connect(t)
	c.send(`421["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
	c.expect(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
	c.expect(`431[{"ok":true,"userId":"u1","email":"e@x"}]`)
	c.expectNothing()
}

// A token without an email claim authenticates with email "". The ack
// carries the same fields as the authenticated event, email included (the
// interop suite, auth.test.js "emitWithAck(authenticate) without email
// claim", expects {ok:true, userId, email:""}).
func TestAuthenticateWithoutEmailClaim(t *testing.T) {
	tn := newTestNode(t, nil)
	token := signClaims(t, testSecret, jwt.MapClaims{"sub": "u2", "exp": time.Now().Add(time.Hour).Unix()})
	c := tn.connect(t)
	c.send(`428["authenticate",{"token":"` + token + `"}]`)
	c.expect(`42["authenticated",{"userId":"u2","email":""}]`)
	c.expect(`438[{"ok":true,"userId":"u2","email":""}]`)
}

func TestAuthenticateRefusals(t *testing.T) {
	tn := newTestNode(t, nil)
	now := time.Now()
	valid := jwt.MapClaims{"sub": "u1", "email": "e@x", "exp": now.Add(time.Hour).Unix()}
	tampered := func() string {
		parts := strings.Split(mustToken(t, "u1", "e@x", time.Hour), ".")
		other := strings.Split(rawJWT(map[string]any{"alg": "HS256", "typ": "JWT"},
			map[string]any{"sub": "admin", "email": "e@x", "exp": now.Add(time.Hour).Unix()}, false), ".")
		return parts[0] + "." + other[1] + "." + parts[2]
	}()
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, valid).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, token, message string }{
		{"bad signature (other secret)", mustTokenWith(t, "another-secret-0123456789abcdefghij", "u1"), msgInvalidToken},
		{"tampered payload", tampered, msgInvalidToken},
		{"alg none", rawJWT(map[string]any{"alg": "none", "typ": "JWT"}, valid, false), msgInvalidToken},
		{"RS256 header signed with the HMAC secret", rawJWT(map[string]any{"alg": "RS256", "typ": "JWT"}, valid, true), msgInvalidToken},
		{"HS512 with the same secret", hs512, msgInvalidToken},
		{"missing exp", signClaims(t, testSecret, jwt.MapClaims{"sub": "u1", "email": "e@x"}), msgInvalidToken},
		{"missing sub", signClaims(t, testSecret, jwt.MapClaims{"email": "e@x", "exp": now.Add(time.Hour).Unix()}), msgInvalidToken},
		{"empty sub", signClaims(t, testSecret, jwt.MapClaims{"sub": "", "exp": now.Add(time.Hour).Unix()}), msgInvalidToken},
		{"not valid yet", signClaims(t, testSecret, jwt.MapClaims{"sub": "u1", "exp": now.Add(2 * time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}), msgInvalidToken},
		{"expired (SignToken with a negative ttl)", mustToken(t, "u1", "e@x", -time.Hour), msgTokenExpired},
		{"garbage", "garbage", msgInvalidToken},
		{"three garbage segments", "abc.def.ghi", msgInvalidToken},
		{"oversized token", strings.Repeat("a", 9<<10), msgInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tn.connect(t)
			c.send(`42["authenticate",{"token":"` + tc.token + `"}]`)
			c.expect(`42["auth_error",{"message":"` + tc.message + `"}]`)
			c.expect(`41`)
			c.expectClosed()
		})
		t.Run(tc.name+" with ack", func(t *testing.T) {
			c := tn.connect(t)
			c.send(`425["authenticate",{"token":"` + tc.token + `"}]`)
			c.expect(`42["auth_error",{"message":"` + tc.message + `"}]`)
			c.expect(`435[{"ok":false,"error":"` + tc.message + `"}]`)
			c.expect(`41`)
			c.expectClosed()
		})
	}
	// Nobody got in, and the node still serves.
	if ok, _ := tn.n.Service().IsUserConnected(context.Background(), "u1"); ok {
		t.Error("a refused token left user u1 connected")
	}
	tn.authed(t, "u1", "e@x")
}

func mustTokenWith(t *testing.T, secret, user string) string {
	t.Helper()
	tok, err := SignToken([]byte(secret), user, "e@x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthenticateMissingToken(t *testing.T) {
	tn := newTestNode(t, nil)
	for _, frame := range []string{
		`42["authenticate",{}]`,
		`42["authenticate",{"token":""}]`,
		`42["authenticate",{"token":null}]`,
		`42["authenticate",{"token":42}]`,
		`42["authenticate","just-a-string"]`,
		`42["authenticate",42]`,
		`42["authenticate",null]`,
		`42["authenticate"]`,
	} {
		t.Run(frame, func(t *testing.T) {
			c := tn.connect(t)
			c.send(frame)
			c.expect(`42["auth_error",{"message":"Token required"}]`)
			c.expect(`41`)
			c.expectClosed()
		})
	}
	c := tn.connect(t)
	c.send(`420["authenticate",{}]`)
	c.expect(`42["auth_error",{"message":"Token required"}]`)
	c.expect(`430[{"ok":false,"error":"Token required"}]`)
	c.expect(`41`)
	c.expectClosed()
}

func TestAuthTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tn := newTestNode(t, func(o *Options) { o.AuthTimeout = timeout })

	t.Run("connected, never authenticated", func(t *testing.T) {
		c := tn.connect(t)
		start := time.Now()
		c.expect(`42["auth_error",{"message":"Authentication timeout"}]`)
		if d := time.Since(start); d < timeout-50*time.Millisecond || d > 2*time.Second {
			t.Errorf("auth_error after %v, want about %v", d, timeout)
		}
		c.expect(`41`)
		c.expectClosed()
	})
	t.Run("no CONNECT at all", func(t *testing.T) {
		c := tn.dial(t, nil)
		start := time.Now()
		c.expectClosed()
		if d := time.Since(start); d < timeout-50*time.Millisecond {
			t.Errorf("closed after %v, before the %v auth timeout", d, timeout)
		}
	})
	t.Run("an event before authentication does not stop the timeout", func(t *testing.T) {
		c := tn.connect(t)
		c.send(`42["send_message",{"text":"hi"}]`)
		c.expectTS(`42["error",{"error":"Not authenticated","code":"UNAUTHENTICATED","timestamp":"TS"}]`)
		c.expect(`42["auth_error",{"message":"Authentication timeout"}]`)
		c.expect(`41`)
		c.expectClosed()
	})
	t.Run("an authenticated socket stays past the timeout", func(t *testing.T) {
		c := tn.authed(t, "u1", "e@x")
		time.Sleep(timeout + 200*time.Millisecond)
		c.expectNothing()
		if err := tn.n.Service().Emit(context.Background(), "u1", "still", 1); err != nil {
			t.Fatal(err)
		}
		c.expect(`42["still",1]`)
	})
	t.Run("a socket authenticated in CONNECT stays past the timeout", func(t *testing.T) {
		c := tn.dial(t, nil)
		c.send(`40{"token":"` + mustToken(t, "u2", "f@x", time.Hour) + `"}`)
		c.expectConnectReply()
		c.expect(`42["authenticated",{"userId":"u2","email":"f@x"}]`)
		time.Sleep(timeout + 200*time.Millisecond)
		c.expectNothing()
	})
	// AuthTimeout bounds how long a socket may stay unauthenticated. A client
	// that authenticates, leaves the namespace (41) and joins again (40) has
	// a new, unauthenticated socket: the timeout must apply to it as well.
	t.Run("a new socket after 41 is again subject to the timeout", func(t *testing.T) {
		c := tn.authed(t, "u3", "g@x")
		c.send("41")
		c.connectNsp()
		c.expect(`42["auth_error",{"message":"Authentication timeout"}]`)
		c.expect(`41`)
		c.expectClosed()
	})
}

func TestConnectAuthToken(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()

	c := tn.dial(t, nil)
	c.send(`40{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}`)
	c.sock = c.expectConnectReply()
	c.expect(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
	if err := tn.n.Service().Emit(ctx, "u1", "hello", "world"); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["hello","world"]`)

	for i, tc := range []struct{ name, auth, message string }{
		{"garbage", `{"token":"garbage"}`, msgInvalidToken},
		{"bad signature", `{"token":"` + mustTokenWith(t, "another-secret-0123456789abcdefghij", "u2") + `"}`, msgInvalidToken},
		{"expired", `{"token":"` + mustToken(t, "u2", "f@x", -time.Minute) + `"}`, msgTokenExpired},
		{"empty", `{"token":""}`, msgTokenRequired},
		{"not a string", `{"token":12}`, msgTokenRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tn.dial(t, nil)
			c.send(`40` + tc.auth)
			c.expect(`44{"message":"` + tc.message + `"}`)
			c.expectNothing()
			if ok, _ := tn.n.Service().IsUserConnected(ctx, "u2"); ok {
				t.Error("a refused CONNECT token connected user u2")
			}
			// The client may still CONNECT without a token and authenticate.
			user := fmt.Sprintf("later%d", i)
			c.connectNsp()
			c.authenticate(mustToken(t, user, "f@x", time.Hour), user, "f@x")
		})
	}
}

func TestEventBeforeAuthentication(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.connect(t)
	c.send(`42["send_message",{"conversationId":"c1","text":"hello"}]`)
	c.expectTS(`42["error",{"error":"Not authenticated","code":"UNAUTHENTICATED","timestamp":"TS"}]`)
	c.send(`42["mark_read"]`)
	c.expectTS(`42["error",{"error":"Not authenticated","code":"UNAUTHENTICATED","timestamp":"TS"}]`)
	c.send(`4212["send_message"]`)
	c.expectTS(`42["error",{"error":"Not authenticated","code":"UNAUTHENTICATED","timestamp":"TS"}]`)
	c.expect(`4312[{"ok":false,"error":"Not authenticated"}]`)
	c.send(`42[7,"numeric name"]`)
	c.expectTS(`42["error",{"error":"Not authenticated","code":"UNAUTHENTICATED","timestamp":"TS"}]`)
	c.expectNothing() // still connected
	c.authenticate(mustToken(t, "late", "late@x", time.Hour), "late", "late@x")
	c.send(`42["send_message",{}]`)
	c.expectTS(`42["error",{"error":"Unknown event: send_message","code":"UNKNOWN_EVENT","timestamp":"TS"}]`)
}

func TestIssuerAndAudience(t *testing.T) {
	const iss, aud = "https://auth.example.com", "hubnode"
	tn := newTestNode(t, func(o *Options) { o.Auth.Issuer, o.Auth.Audience = iss, aud })
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "u1", "email": "e@x", "exp": exp}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	t.Run("matching iss and aud", func(t *testing.T) {
		c := tn.connect(t)
		c.authenticate(signClaims(t, testSecret, claims(jwt.MapClaims{"iss": iss, "aud": aud})), "u1", "e@x")
	})
	t.Run("aud list containing the audience", func(t *testing.T) {
		c := tn.connect(t)
		c.authenticate(signClaims(t, testSecret, claims(jwt.MapClaims{"iss": iss, "aud": []string{"other", aud}})), "u1", "e@x")
	})
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
	}{
		{"wrong iss", claims(jwt.MapClaims{"iss": "https://evil.example", "aud": aud})},
		{"missing iss", claims(jwt.MapClaims{"aud": aud})},
		{"wrong aud", claims(jwt.MapClaims{"iss": iss, "aud": "other"})},
		{"missing aud", claims(jwt.MapClaims{"iss": iss})},
		{"SignToken (no iss, no aud)", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := mustToken(t, "u1", "e@x", time.Hour)
			if tc.claims != nil {
				token = signClaims(t, testSecret, tc.claims)
			}
			c := tn.connect(t)
			c.send(`42["authenticate",{"token":"` + token + `"}]`)
			c.expect(`42["auth_error",{"message":"Invalid token"}]`)
			c.expect(`41`)
			c.expectClosed()

			c = tn.dial(t, nil)
			c.send(`40{"token":"` + token + `"}`)
			c.expect(`44{"message":"Invalid token"}`)
		})
	}
	// Without the options any iss and aud are accepted.
	open := newTestNode(t, nil)
	c := open.connect(t)
	c.authenticate(signClaims(t, testSecret, claims(jwt.MapClaims{"iss": "whoever", "aud": "whatever"})), "u1", "e@x")
}

func TestReauthenticate(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	c := tn.authed(t, "u1", "e@x")

	// The same user again (a token refresh) succeeds, with and without ack.
	c.authenticate(mustToken(t, "u1", "e@x", 2*time.Hour), "u1", "e@x")
	c.send(`422["authenticate",{"token":"` + mustToken(t, "u1", "e@x", 3*time.Hour) + `"}]`)
	c.expect(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
	c.expect(`432[{"ok":true,"userId":"u1","email":"e@x"}]`)
	if n, _ := tn.n.Service().GetUserConnectionCount(ctx, "u1"); n != 1 {
		t.Errorf("GetUserConnectionCount(u1) = %d after re-authentication, want 1", n)
	}

	// Another user is refused, and the socket stays connected as u1.
	c.send(`42["authenticate",{"token":"` + mustToken(t, "u2", "f@x", time.Hour) + `"}]`)
	c.expect(`42["auth_error",{"message":"Already authenticated as another user"}]`)
	c.send(`423["authenticate",{"token":"` + mustToken(t, "u2", "f@x", time.Hour) + `"}]`)
	c.expect(`42["auth_error",{"message":"Already authenticated as another user"}]`)
	c.expect(`433[{"ok":false,"error":"Already authenticated as another user"}]`)
	c.expectNothing() // no 41, no close
	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u2"); ok {
		t.Error("u2 is connected through u1's socket")
	}
	if err := tn.n.Service().Emit(ctx, "u2", "for_u2", 1); err != nil {
		t.Fatal(err)
	}
	if err := tn.n.Service().Emit(ctx, "u1", "for_u1", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["for_u1",1]`)
}
