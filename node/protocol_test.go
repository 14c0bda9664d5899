package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// --- 1. Engine.IO handshake ---

func TestHandshakeOpenPacket(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 1500 * time.Millisecond
		o.PingTimeout = 1200 * time.Millisecond
		o.MaxPayload = 65536
	})
	sids := map[string]bool{}
	for _, path := range []string{"/socket.io/", "/socket.io"} {
		t.Run(path, func(t *testing.T) {
			c := tn.dialPath(t, path, nil)
			if c.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("status %d, want 101", c.resp.StatusCode)
			}
			keys := make([]string, 0, len(c.open))
			for k := range c.open {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if got, want := strings.Join(keys, ","), "maxPayload,pingInterval,pingTimeout,sid,upgrades"; got != want {
				t.Errorf("open packet keys %s, want exactly %s", got, want)
			}
			if !sidRE.MatchString(c.sid) {
				t.Errorf("sid %q is not 20 URL-safe characters", c.sid)
			}
			want := `0{"sid":"` + c.sid + `","upgrades":[],"pingInterval":1500,"pingTimeout":1200,"maxPayload":65536}`
			if c.openRaw != want {
				t.Errorf("open packet %s\nwant        %s", c.openRaw, want)
			}
			if sids[c.sid] {
				t.Errorf("sid %q handed out twice", c.sid)
			}
			sids[c.sid] = true
			// The session works on both paths.
			c.connectNsp()
			c.authenticate(mustToken(t, "u1", "e@x", time.Hour), "u1", "e@x")
		})
	}
}

func TestHandshakeDefaults(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.dial(t, nil)
	want := `0{"sid":"` + c.sid + `","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`
	if c.openRaw != want {
		t.Errorf("open packet %s\nwant        %s", c.openRaw, want)
	}
}

func TestHandshakeErrors(t *testing.T) {
	tn := newTestNode(t, nil)
	const (
		code0 = `{"code":0,"message":"Transport unknown"}`
		code1 = `{"code":1,"message":"Session ID unknown"}`
		code3 = `{"code":3,"message":"Bad request"}`
		code5 = `{"code":5,"message":"Unsupported protocol version"}`
	)
	// WebSocket upgrade requests (what a client with transports:['websocket'] sends).
	for _, tc := range []struct{ name, query, body string }{
		{"EIO=3", "EIO=3&transport=websocket", code5},
		{"no EIO", "transport=websocket", code5},
		{"EIO=5", "EIO=5&transport=websocket", code5},
		{"unknown transport", "EIO=4&transport=webtransport-ish", code0},
		{"no transport", "EIO=4", code0},
		{"sid of a session this node does not hold", "EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA", code1},
	} {
		t.Run("upgrade "+tc.name, func(t *testing.T) {
			conn, resp, err := dialURL(tn.wsURL(tc.query), nil)
			if err == nil {
				_ = conn.Close()
				t.Fatalf("upgrade accepted, want 400 %s", tc.body)
			}
			if !errors.Is(err, websocket.ErrBadHandshake) {
				t.Fatalf("dial: %v, want a refused handshake", err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if body := respBody(t, resp); body != tc.body {
				t.Errorf("body %s, want %s", body, tc.body)
			}
		})
	}
	// Plain HTTP requests (what a polling client or a probe sends).
	for _, tc := range []struct{ name, method, query, body string }{
		{"EIO=3 polling handshake", http.MethodGet, "EIO=3&transport=polling", code5},
		{"polling POST to an unknown session", http.MethodPost, "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", code1},
		{"polling GET of an unknown session", http.MethodGet, "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", code1},
		{"websocket GET without Upgrade", http.MethodGet, "EIO=4&transport=websocket", code3},
		{"websocket GET with a sid", http.MethodGet, "EIO=4&transport=websocket&sid=x", code1},
	} {
		t.Run("plain "+tc.name, func(t *testing.T) {
			for _, path := range []string{"/socket.io/", "/socket.io"} {
				r := tn.do(t, tc.method, path+"?"+tc.query, "", "", nil)
				expectStatus(t, tc.method+" "+path+"?"+tc.query, r, http.StatusBadRequest, tc.body)
				if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
			}
		})
	}
	for _, transport := range []string{"websocket", "polling"} {
		r := tn.do(t, http.MethodPost, "/socket.io/?EIO=4&transport="+transport, "", "", nil)
		expectStatus(t, "POST handshake "+transport, r, http.StatusBadRequest, `{"code":2,"message":"Bad handshake method"}`)
	}

	// The node still serves after the refusals, and none of them counts as a session.
	if open := tn.n.open.Load(); open != 0 {
		t.Errorf("%d sessions open after refused handshakes", open)
	}
	tn.authed(t, "u1", "e@x")
}

// --- 2. Heartbeat ---

func TestHeartbeatPingsWhileClientBusy(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 300 * time.Millisecond // the client answers; a loaded machine may be slow to
	})
	tn.autoPong = true
	c := tn.authed(t, "busy", "b@x")

	// The client keeps the connection busy (noops and events, each event
	// answered by an error event) for ten ping intervals.
	start := time.Now()
	sent := 0
	for time.Since(start) < time.Second {
		c.send("6")
		c.send(`42["busy",1]`)
		sent++
		time.Sleep(5 * time.Millisecond)
	}
	if pings := c.pings.Load(); pings < 6 {
		t.Errorf("%d pings in %v of client traffic with PingInterval 100ms, want at least 6", pings, time.Since(start))
	}
	// Every busy event was answered, then the session is still alive.
	for i := 0; i < sent; i++ {
		got := normalizeTS(t, c.nextText())
		if want := `42["error",{"error":"Unknown event: busy","code":"UNKNOWN_EVENT","timestamp":"TS"}]`; got != want {
			t.Fatalf("answer %d: %q, want %q", i, got, want)
		}
	}
	if err := tn.n.Service().Emit(context.Background(), "busy", "still_here", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["still_here",1]`)
}

func TestHeartbeatPongKeepsSessionAlive(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 300 * time.Millisecond // the client answers; a loaded machine may be slow to
	})
	c := tn.dial(t, nil)
	c.connectNsp()
	// Answer five pings by hand, each one PingInterval after the previous pong.
	last := time.Now()
	for i := 0; i < 5; i++ {
		c.expect("2")
		if gap := time.Since(last); gap < 70*time.Millisecond {
			t.Errorf("ping %d came %v after the previous pong, want about PingInterval (100ms)", i, gap)
		}
		c.send("3")
		last = time.Now()
	}
	c.autoPong.Store(true) // from here on the reader answers pings
	c.authenticate(mustToken(t, "u1", "e@x", time.Hour), "u1", "e@x")
	if ok, _ := tn.n.Service().IsUserConnected(context.Background(), "u1"); !ok {
		t.Error("the user is not connected after several answered pings")
	}
}

func TestHeartbeatNoPongClosesAfterPingTimeout(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 100 * time.Millisecond
	})
	c := tn.dial(t, nil)
	opened := time.Now()
	c.connectNsp()
	c.expect("2")
	pinged := time.Now()
	if d := pinged.Sub(opened); d < 70*time.Millisecond {
		t.Errorf("first ping %v after the open packet, want about PingInterval (100ms)", d)
	}
	c.expectClosed()
	if d := time.Since(pinged); d < 70*time.Millisecond || d > time.Second {
		t.Errorf("closed %v after the unanswered ping, want about PingTimeout (100ms)", d)
	}
	eventually(t, "the session to be untracked", func() bool { return tn.n.open.Load() == 0 })
}

func TestHeartbeatClientPingClosesConnection(t *testing.T) {
	tn := newTestNode(t, nil)
	t.Run("before CONNECT", func(t *testing.T) {
		c := tn.dial(t, nil)
		c.send("2")
		c.expectClosed()
	})
	t.Run("after authentication", func(t *testing.T) {
		c := tn.authed(t, "u1", "e@x")
		c.send("2")
		c.expectClosed()
	})
	tn.authed(t, "u2", "f@x")
}

func TestEngineClosePacketClosesConnection(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.authed(t, "u1", "e@x")
	c.send("1")
	c.expectClosed()
	eventually(t, "u1 to be gone", func() bool {
		ok, _ := tn.n.Service().IsUserConnected(context.Background(), "u1")
		return !ok
	})
}

// --- 3. Socket.IO CONNECT / DISCONNECT ---

func TestConnectMainNamespace(t *testing.T) {
	tn := newTestNode(t, nil)
	a := tn.dial(t, nil)
	a.connectNsp() // checks 40{"sid":"<20 chars>"} and sid != engine sid
	b := tn.dial(t, nil)
	b.connectNsp()
	if a.sock == b.sock {
		t.Errorf("two sockets share the id %q", a.sock)
	}
	// A CONNECT with an empty auth object is the same as none.
	c := tn.dial(t, nil)
	c.send("40{}")
	c.expectConnectReply()
}

func TestConnectInvalidNamespace(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.dial(t, nil)
	c.send("40/admin,")
	c.expect(`44/admin,{"message":"Invalid namespace"}`)
	c.send("40/admin") // the comma is optional at the end of the packet
	c.expect(`44/admin,{"message":"Invalid namespace"}`)
	c.expectNothing()
	// The main namespace is still available on the same connection.
	c.connectNsp()
	c.authenticate(mustToken(t, "u1", "e@x", time.Hour), "u1", "e@x")
}

func TestConnectTwiceClosesConnection(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.dial(t, nil)
	c.connectNsp()
	c.send("40")
	c.expectClosed()
}

func TestClientDisconnectThenReconnect(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	c := tn.authed(t, "u1", "e@x")
	first := c.sock
	c.send("41")
	c.expectNothing() // no answer to a client DISCONNECT
	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); ok {
		t.Error("the user is still connected after its only socket sent 41")
	}
	if err := tn.n.Service().Emit(ctx, "u1", "lost", 1); err != nil {
		t.Fatal(err)
	}
	c.expectNothing() // the socket left the user room
	// A new CONNECT on the same connection is allowed and gives a new socket.
	c.connectNsp()
	if c.sock == first {
		t.Errorf("the new socket reuses the id %q", first)
	}
	c.authenticate(mustToken(t, "u1", "e@x", time.Hour), "u1", "e@x")
	if err := tn.n.Service().Emit(ctx, "u1", "back", 2); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["back",2]`)
}

func TestEventAfterClientDisconnectGetsNoAnswer(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.authed(t, "u1", "e@x")
	c.send("41")
	c.send(`421["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
	// No reply of any kind: the server either ignores the event or closes
	// the connection (as Node does for a packet to a namespace not joined).
	if f, err := c.nextWithin(quietPeriod); err == nil {
		t.Fatalf("got %s for an event sent after 41, want no answer", f)
	}
	tn.authed(t, "u2", "f@x")
}

// --- 4. Malformed input ---

func TestMalformedInputClosesOnlyThatConnection(t *testing.T) {
	tn := newTestNode(t, nil)
	// A bystander that must survive every bad client.
	bystander := tn.authed(t, "bystander", "by@x")
	token := mustToken(t, "u1", "e@x", time.Hour)

	type step struct {
		text   string
		binary []byte
	}
	cases := []struct {
		name      string
		noConnect bool // send before the Socket.IO CONNECT
		steps     []step
	}{
		{name: "abc", steps: []step{{text: "abc"}}},
		{name: "empty text frame", steps: []step{{text: ""}}},
		{name: "4 (message without Socket.IO packet)", steps: []step{{text: "4"}}},
		{name: "42{}", steps: []step{{text: "42{}"}}},
		{name: "42abc[", steps: []step{{text: "42abc["}}},
		{name: "4X", steps: []step{{text: "4X"}}},
		{name: "47 (unknown Socket.IO type)", steps: []step{{text: "47"}}},
		{name: "42[] (no event name)", steps: []step{{text: "42[]"}}},
		{name: "42[{}] (object as event name)", steps: []step{{text: "42[{}]"}}},
		{name: `42["disconnect"]`, steps: []step{{text: `42["disconnect"]`}}},
		{name: `42["connect"]`, steps: []step{{text: `42["connect"]`}}},
		{name: "41 with a payload", steps: []step{{text: `41{}`}}},
		{name: "44 from a client", steps: []step{{text: `44{"message":"x"}`}}},
		{name: "ack id beyond 2^53", steps: []step{{text: `429007199254740993["x"]`}}},
		{name: "11 attachments", steps: []step{{text: `4511-["x",{"_placeholder":true,"num":0}]`}}},
		{name: "placeholder out of range", steps: []step{{text: `451-["x",{"_placeholder":true,"num":1}]`}}},
		{name: "open packet from a client", steps: []step{{text: "0"}}},
		{name: "upgrade packet without probe", steps: []step{{text: "5"}}},
		{name: "binary frame with no pending attachment", steps: []step{{binary: []byte{1, 2, 3}}}},
		{name: "event before CONNECT", noConnect: true, steps: []step{{text: `42["authenticate",{"token":"` + token + `"}]`}}},
		{name: "ack before CONNECT", noConnect: true, steps: []step{{text: `430[]`}}},
		{name: "text while attachments are pending", steps: []step{
			{text: `451-["upload",{"_placeholder":true,"num":0}]`},
			{text: `42["authenticate",{"token":"` + token + `"}]`},
		}},
		{name: "packet for a namespace not joined", steps: []step{{text: `42/admin,["x"]`}}},
		{name: "CONNECT with a string payload", noConnect: true, steps: []step{{text: `40"token"`}}},
		{name: "CONNECT with an array payload", noConnect: true, steps: []step{{text: `40[]`}}},
		{name: "CONNECT with invalid JSON", noConnect: true, steps: []step{{text: `40{"token":`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tn.dial(t, nil)
			if !tc.noConnect {
				c.connectNsp()
			}
			for _, s := range tc.steps {
				if s.binary != nil {
					c.sendBinary(s.binary)
				} else {
					c.send(s.text)
				}
			}
			c.expectClosed()
			// A fresh client still connects and authenticates on the same server.
			tn.authed(t, "u1", "e@x")
		})
	}
	// The bystander kept its connection and still receives emits.
	if err := tn.n.Service().Emit(context.Background(), "bystander", "alive", true); err != nil {
		t.Fatal(err)
	}
	bystander.expect(`42["alive",true]`)
	if p := tn.n.metrics.panics.Load(); p != 0 {
		t.Errorf("%d panic(s) recovered while handling malformed input", p)
	}
	if pe := tn.n.metrics.protocolErrors.Load(); pe < int64(len(cases)) {
		t.Errorf("protocolErrors = %d, want at least %d", pe, len(cases))
	}
}

func TestFrameAboveMaxPayloadClosesConnection(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.MaxPayload = 1024 })
	bystander := tn.authed(t, "bystander", "by@x")
	if got := string(bystander.open["maxPayload"]); got != "1024" {
		t.Errorf("open packet maxPayload %s, want 1024", got)
	}

	c := tn.authed(t, "u1", "e@x")
	big := `42["x","` + strings.Repeat("a", 2<<20) + `"]` // 2 MB text frame
	c.send(big)
	c.expectClosed()

	// A binary frame above the limit too.
	c2 := tn.authed(t, "u2", "f@x")
	c2.send(`451-["upload",{"_placeholder":true,"num":0}]`)
	c2.sendBinary(make([]byte, 2<<20))
	c2.expectClosed()

	// A frame exactly at the limit is accepted.
	c3 := tn.authed(t, "u3", "g@x")
	prefix, suffix := `42["ok","`, `"]`
	c3.send(prefix + strings.Repeat("b", 1024-len(prefix)-len(suffix)) + suffix)
	c3.expectTS(`42["error",{"error":"Unknown event: ok","code":"UNKNOWN_EVENT","timestamp":"TS"}]`)

	tn.authed(t, "u4", "h@x")
	if err := tn.n.Service().Emit(context.Background(), "bystander", "alive", 1); err != nil {
		t.Fatal(err)
	}
	bystander.expect(`42["alive",1]`)
	if p := tn.n.metrics.panics.Load(); p != 0 {
		t.Errorf("%d panic(s) recovered", p)
	}
}

// --- 5. Binary packets ---

func TestBinaryAuthenticateIsRefusedCleanly(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.dial(t, nil)
	c.connectNsp()
	c.send(`451-["authenticate",{"_placeholder":true,"num":0}]`)
	c.expectNothing() // waiting for the attachment
	c.sendBinary([]byte("not a token"))
	c.expect(`42["auth_error",{"message":"Token required"}]`)
	c.expect(`41`)
	c.expectClosed()

	// The same with an ack id: the ack carries the refusal too.
	c = tn.dial(t, nil)
	c.connectNsp()
	c.send(`451-7["authenticate",{"token":{"_placeholder":true,"num":0}}]`)
	c.sendBinary([]byte{0xff, 0x00})
	c.expect(`42["auth_error",{"message":"Token required"}]`)
	c.expect(`437[{"ok":false,"error":"Token required"}]`)
	c.expect(`41`)
	c.expectClosed()

	// The process keeps serving.
	tn.authed(t, "u1", "e@x")
	if p := tn.n.metrics.panics.Load(); p != 0 {
		t.Errorf("%d panic(s) recovered", p)
	}
}

func TestBinaryEventAfterAuthGetsErrorEvent(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.authed(t, "u1", "e@x")
	c.send(`452-["upload",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}]`)
	c.sendBinary([]byte{1, 2, 3})
	c.expectNothing()
	c.sendBinary([]byte{4})
	c.expectTS(`42["error",{"error":"Unknown event: upload","code":"UNKNOWN_EVENT","timestamp":"TS"}]`)
	// With an ack id the ack is answered as well.
	c.send(`451-3["upload",{"_placeholder":true,"num":0}]`)
	c.sendBinary([]byte{9})
	c.expectTS(`42["error",{"error":"Unknown event: upload","code":"UNKNOWN_EVENT","timestamp":"TS"}]`)
	c.expect(`433[{"ok":false,"error":"Unknown event: upload"}]`)
	// The connection stays open and the decoder is ready for text again.
	c.expectNothing()
	if err := tn.n.Service().Emit(context.Background(), "u1", "after_binary", json.RawMessage(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["after_binary",{"ok":true}]`)
}

func TestMaxConnections(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.MaxConnections = 2 })
	a := tn.authed(t, "u1", "e@x")
	tn.connect(t)
	conn, resp, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil)
	if err == nil {
		_ = conn.Close()
		t.Fatal("a third connection was accepted with MaxConnections 2")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: %v, want 503", err)
	}
	if body := respBody(t, resp); body != `{"code":4,"message":"Too many connections"}` {
		t.Errorf("third connection: body %s", body)
	}
	a.close()
	eventually(t, "a slot to free up", func() bool { return tn.n.open.Load() == 1 })
	tn.authed(t, "u2", "f@x")
}
