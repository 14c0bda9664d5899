package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// The cases of the official protocol suites (the test-suite folders of
// socketio/engine.io-protocol and socketio/socket.io-protocol), run against
// the conformance server (cmd/conformance) so CI covers them without
// fetching the suites. The suites' server pings every 300 ms with a 200 ms
// timeout; the waits below are sized on that.

const (
	confPingInterval = 300 * time.Millisecond
	confPingTimeout  = 200 * time.Millisecond
)

// confServer is NewConformance behind an httptest server.
type confServer struct {
	c   *Conformance
	srv *httptest.Server
}

func newConfServer(t *testing.T) *confServer {
	t.Helper()
	c, err := NewConformance(zap.NewNop())
	if err != nil {
		t.Fatalf("NewConformance: %v", err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(func() {
		// The subtests' clients are closed by now; polling sessions left
		// alone end by ping timeout within half a second.
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if c.engine.open.Load() == 0 && c.socket.open.Load() == 0 {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("cleanup: Shutdown: %v", err)
		}
		srv.Close()
		if p := c.engine.metrics.panics.Load() + c.socket.metrics.panics.Load(); p != 0 {
			t.Errorf("the conformance server recovered %d panic(s)", p)
		}
	})
	return &confServer{c: c, srv: srv}
}

func (cs *confServer) poll(t *testing.T, path string) *pollClient {
	return newPollClient(t, cs.srv, path)
}

func (cs *confServer) wsURL(path, query string) string {
	return wsBase(cs.srv) + path + "?" + query
}

// node is the node serving path: the Engine.IO echo or the Socket.IO echo.
func (cs *confServer) node(path string) *Node {
	if path == "/engine.io/" {
		return cs.c.engine
	}
	return cs.c.socket
}

// expectOpenPacket checks the open packet of a session against the suites'
// server: exactly the five keys, and their values.
func expectOpenPacket(t *testing.T, raw, sid, upgrades string) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(strings.TrimPrefix(raw, "0")), &fields); err != nil || raw[0] != '0' {
		t.Fatalf("open packet %q: %v", raw, err)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "maxPayload,pingInterval,pingTimeout,sid,upgrades" {
		t.Errorf("open packet keys %s, want exactly sid, upgrades, pingInterval, pingTimeout, maxPayload", got)
	}
	if !sidRE.MatchString(sid) {
		t.Errorf("sid %q is not 20 URL-safe characters", sid)
	}
	want := `0{"sid":"` + sid + `","upgrades":` + upgrades + `,"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}`
	if raw != want {
		t.Errorf("open packet %s\nwant        %s", raw, want)
	}
}

// expectWSRefused requires a WebSocket handshake to be refused with 400 and
// the Engine.IO error code.
func expectWSRefused(t *testing.T, url string, code int) {
	t.Helper()
	conn, resp, err := dialURL(url, nil)
	if err == nil {
		_ = conn.Close()
		t.Errorf("%s: upgrade accepted, want 400", url)
		return
	}
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Errorf("%s: %v, want a refused handshake", url, err)
		return
	}
	body := respBody(t, resp)
	want := fmt.Sprintf(`{"code":%d,"message":%q}`, code, eioMessages[code])
	if resp.StatusCode != http.StatusBadRequest || body != want {
		t.Errorf("%s: %d %s, want 400 %s", url, resp.StatusCode, body, want)
	}
}

// expectBinary requires the next frame to be a binary frame of want.
func expectBinary(c *wsClient, want []byte) {
	c.t.Helper()
	if f := c.next(); !f.binary || !bytes.Equal(f.data, want) {
		c.t.Fatalf("got %s, want binary %x", f, want)
	}
}

// --- Engine.IO suite ---

func TestConformanceEngineIO(t *testing.T) {
	cs := newConfServer(t)
	cases := []struct {
		name     string
		echoOnly bool // needs the Engine.IO echo (/engine.io/)
		fn       func(t *testing.T, cs *confServer, path string)
	}{
		{"handshake/polling opens a session", false, eioHandshakePolling},
		{"handshake/polling invalid EIO", false, eioInvalidEIOPolling},
		{"handshake/polling invalid transport", false, eioInvalidTransportPolling},
		{"handshake/polling invalid method", false, eioInvalidMethod},
		{"handshake/websocket opens a session", false, eioHandshakeWebSocket},
		{"handshake/websocket invalid EIO", false, eioInvalidEIOWebSocket},
		{"handshake/websocket invalid transport", false, eioInvalidTransportWebSocket},
		{"message/polling one text packet", true, eioPollingOneText},
		{"message/polling several text packets", true, eioPollingSeveralText},
		{"message/polling text and binary", true, eioPollingTextAndBinary},
		{"message/polling invalid packet closes", false, eioPollingInvalidPacket},
		{"message/polling duplicate GET closes", false, eioPollingDuplicateGet},
		{"message/websocket text", true, eioWebSocketText},
		{"message/websocket binary", true, eioWebSocketBinary},
		{"message/websocket invalid packet closes", false, eioWebSocketInvalidPacket},
		{"heartbeat/polling ping pong", false, eioPollingPingPong},
		{"heartbeat/polling ping timeout", false, eioPollingPingTimeout},
		{"heartbeat/websocket ping pong", false, eioWebSocketPingPong},
		{"heartbeat/websocket ping timeout", false, eioWebSocketPingTimeout},
		{"close/polling forced", false, eioPollingClose},
		{"close/websocket forced", false, eioWebSocketClose},
		{"upgrade/next GET released", false, func(t *testing.T, cs *confServer, path string) { eioUpgrade(t, cs, path, false) }},
		{"upgrade/pending GET released", false, func(t *testing.T, cs *confServer, path string) { eioUpgrade(t, cs, path, true) }},
		{"upgrade/HTTP requests after upgrade refused", false, eioUpgradeThenHTTP},
		{"upgrade/second WebSocket after upgrade closed", false, eioUpgradeThenWebSocket},
	}
	for _, path := range []string{"/engine.io/", "/socket.io/"} {
		for _, tc := range cases {
			if tc.echoOnly && path != "/engine.io/" {
				continue
			}
			t.Run(strings.Trim(path, "/")+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, cs, path)
			})
		}
	}
}

func eioHandshakePolling(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	r := pc.handshake()
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
		t.Errorf("Content-Type %q", ct)
	}
	expectOpenPacket(t, pc.openRaw, pc.sid, `["websocket"]`)
	pc.expectPostOK("1")
}

func eioInvalidEIOPolling(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	for _, q := range []string{"transport=polling", "EIO=abc&transport=polling", "EIO=3&transport=polling"} {
		expectEngineError(t, "GET ?"+q, pc.do(http.MethodGet, q, "", nil), eioUnsupportedVersion)
	}
}

func eioInvalidTransportPolling(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	for _, q := range []string{"EIO=4", "EIO=4&transport=abc"} {
		expectEngineError(t, "GET ?"+q, pc.do(http.MethodGet, q, "", nil), eioTransportUnknown)
	}
}

func eioInvalidMethod(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	for _, m := range []string{http.MethodPost, http.MethodPut} {
		expectEngineError(t, m+" handshake", pc.do(m, "EIO=4&transport=polling", "", nil), eioBadHandshakeMethod)
	}
}

func eioHandshakeWebSocket(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), true)
	if c.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status %d, want 101", c.resp.StatusCode)
	}
	expectOpenPacket(t, c.openRaw, c.sid, `[]`)
}

func eioInvalidEIOWebSocket(t *testing.T, cs *confServer, path string) {
	for _, q := range []string{"transport=websocket", "EIO=abc&transport=websocket"} {
		expectWSRefused(t, cs.wsURL(path, q), eioUnsupportedVersion)
	}
}

func eioInvalidTransportWebSocket(t *testing.T, cs *confServer, path string) {
	for _, q := range []string{"EIO=4", "EIO=4&transport=abc"} {
		expectWSRefused(t, cs.wsURL(path, q), eioTransportUnknown)
	}
}

func eioPollingOneText(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	pc.expectPostOK("4hello")
	pc.expectGet("4hello")
}

func eioPollingSeveralText(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	pc.expectPostOK("4test1\x1e4test2\x1e4test3")
	pc.expectGet("4test1\x1e4test2\x1e4test3")
}

func eioPollingTextAndBinary(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	pc.expectPostOK("4hello\x1ebAQIDBA==")
	pc.expectGet("4hello\x1ebAQIDBA==")
}

func eioPollingInvalidPacket(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	expectEngineError(t, `POST "abc"`, pc.post("abc"), eioBadRequest)
	expectEngineError(t, "GET after the invalid packet", pc.get(), eioBadRequest)
}

func eioPollingDuplicateGet(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	first := pc.getAsync()
	waitHeld(t, cs.node(path), pc.sid)
	// The suite accepts 400 or 500 for the duplicate; Node's 400 here.
	expectEngineError(t, "duplicate GET", pc.get(), eioBadRequest)
	if r := pc.await(first); r.status != http.StatusOK || r.body != "1" {
		t.Errorf("first GET: %s, want 200 \"1\"", r)
	}
	expectEngineError(t, "GET after the duplicate", pc.get(), eioBadRequest)
}

func eioWebSocketText(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), true)
	c.send("4hello")
	c.expect("4hello")
}

func eioWebSocketBinary(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), true)
	c.sendBinary([]byte{1, 2, 3, 4})
	expectBinary(c, []byte{1, 2, 3, 4})
}

func eioWebSocketInvalidPacket(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), true)
	c.send("abc")
	c.expectClosed()
}

func eioPollingPingPong(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	last := time.Now()
	for i := 0; i < 3; i++ {
		pc.expectGet("2")
		if gap := time.Since(last); gap < confPingInterval*3/4 {
			t.Errorf("ping %d came %v after the previous pong, want about pingInterval", i, gap)
		}
		pc.expectPostOK("3")
		last = time.Now()
	}
	pc.expectPostOK("1")
}

func eioPollingPingTimeout(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	time.Sleep(confPingInterval + confPingTimeout + 100*time.Millisecond)
	expectEngineError(t, "GET after the ping timeout", pc.get(), eioBadRequest)
	// The suite's Engine.IO v3 edition POSTs instead: refused as well.
	expectEngineError(t, "POST after the ping timeout", pc.post("3"), eioBadRequest)
}

func eioWebSocketPingPong(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), false)
	for i := 0; i < 3; i++ {
		c.expect("2")
		c.send("3")
	}
}

func eioWebSocketPingTimeout(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), false)
	opened := time.Now()
	c.expect("2")
	c.expectClosed()
	if d := time.Since(opened); d < confPingInterval+confPingTimeout*3/4 {
		t.Errorf("closed %v after the open packet, want after pingInterval+pingTimeout", d)
	}
}

func eioPollingClose(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	held := pc.getAsync()
	waitHeld(t, cs.node(path), pc.sid)
	pc.expectPostOK("1")
	if r := pc.await(held); r.status != http.StatusOK || r.body != "6" {
		t.Errorf("pending GET: %s, want 200 \"6\"", r)
	}
	expectEngineError(t, "GET after the close", pc.get(), eioBadRequest)
}

func eioWebSocketClose(t *testing.T, cs *confServer, path string) {
	c := dialWSOpen(t, cs.wsURL(path, "EIO=4&transport=websocket"), true)
	c.send("1")
	c.expectClosed()
}

// expectSessionOnWebSocket checks that the upgraded session answers on ws:
// the echo, or the Socket.IO handshake.
func expectSessionOnWebSocket(ws *wsClient, path string) {
	ws.t.Helper()
	if path == "/engine.io/" {
		ws.send("4hello")
		ws.expect("4hello")
		return
	}
	ws.send("40")
	ws.expectConnectReply()
	ws.expect(`42["auth",{}]`)
}

// upgradeProbe opens the probe WebSocket of pc's session and completes the
// probe: 2probe, 3probe.
func upgradeProbe(t *testing.T, cs *confServer, path string, pc *pollClient) *wsClient {
	t.Helper()
	ws := dialWS(t, cs.wsURL(path, "EIO=4&transport=websocket&sid="+pc.sid), true)
	ws.send("2probe")
	ws.expect("3probe")
	return ws
}

func eioUpgrade(t *testing.T, cs *confServer, path string, pendingGet bool) {
	pc := cs.poll(t, path)
	pc.handshake()
	var held <-chan pollResult
	if pendingGet {
		held = pc.getAsync()
		waitHeld(t, cs.node(path), pc.sid)
	}
	ws := upgradeProbe(t, cs, path, pc)
	var r pollResult
	if pendingGet {
		r = pc.await(held)
	} else {
		r = pc.get()
	}
	if r.status != http.StatusOK || r.body != "6" {
		t.Fatalf("GET during the probe: %s, want 200 \"6\"", r)
	}
	ws.send("5")
	expectSessionOnWebSocket(ws, path)
	// The heartbeat follows the session to the WebSocket.
	eventually(t, "a ping on the WebSocket", func() bool { return ws.pings.Load() > 0 })
	// The pong went over the WebSocket too: the session lives on.
	if path == "/engine.io/" {
		ws.send("4again")
		ws.expect("4again")
	} else {
		ws.send(`42["message","again"]`)
		ws.expect(`42["message-back","again"]`)
	}
}

func eioUpgradeThenHTTP(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	ws := upgradeProbe(t, cs, path, pc)
	ws.send("5")
	expectEngineError(t, "GET after the upgrade", pc.get(), eioBadRequest)
	expectEngineError(t, "POST after the upgrade", pc.post("6"), eioBadRequest)
	expectSessionOnWebSocket(ws, path)
}

func eioUpgradeThenWebSocket(t *testing.T, cs *confServer, path string) {
	pc := cs.poll(t, path)
	pc.handshake()
	ws := upgradeProbe(t, cs, path, pc)
	ws.send("5")
	ws2 := dialWS(t, cs.wsURL(path, "EIO=4&transport=websocket&sid="+pc.sid), true)
	if ws2.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("second WebSocket: status %d, want 101 then a close", ws2.resp.StatusCode)
	}
	ws2.expectClosed()
	expectSessionOnWebSocket(ws, path)
}

// --- Socket.IO suite ---

func TestConformanceSocketIO(t *testing.T) {
	cs := newConfServer(t)
	cases := []struct {
		name string
		fn   func(t *testing.T, cs *confServer)
	}{
		{"connect/main namespace", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send("40")
			c.expectConnectReply()
			c.expect(`42["auth",{}]`)
		}},
		{"connect/main namespace with payload", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send(`40{"token":"123"}`)
			c.expectConnectReply()
			c.expect(`42["auth",{"token":"123"}]`)
		}},
		{"connect/custom namespace", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send("40/custom,")
			expectNspConnectReply(c, "/custom")
			c.expect(`42/custom,["auth",{}]`)
		}},
		{"connect/custom namespace without comma", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send("40/custom")
			expectNspConnectReply(c, "/custom")
			c.expect(`42/custom,["auth",{}]`)
		}},
		{"connect/custom namespace with payload", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send(`40/custom,{"token":"abc"}`)
			expectNspConnectReply(c, "/custom")
			c.expect(`42/custom,["auth",{"token":"abc"}]`)
		}},
		{"connect/unknown namespace", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send("40/random")
			c.expect(`44/random,{"message":"Invalid namespace"}`)
			// The connection stays usable.
			c.send("40")
			c.expectConnectReply()
			c.expect(`42["auth",{}]`)
		}},
		{"connect/invalid handshake closes", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			c.send("4abc")
			c.expectClosed()
		}},
		{"connect/no handshake within connectTimeout closes", func(t *testing.T, cs *confServer) {
			c := sioDial(t, cs, true)
			opened := time.Now()
			c.expectClosed()
			if d := time.Since(opened); d < 900*time.Millisecond {
				t.Errorf("closed after %v, want after the 1s connect timeout", d)
			}
		}},
		{"disconnect/main namespace", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, false)
			c.send("41")
			// Nothing answers the DISCONNECT: the next message is a ping.
			if got := c.nextText(); got != "2" {
				t.Fatalf("after 41: %q, want the ping \"2\"", got)
			}
		}},
		{"disconnect/custom namespace then main still echoes", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send("40/custom")
			expectNspConnectReply(c, "/custom")
			c.expect(`42/custom,["auth",{}]`)
			c.send("41/custom")
			c.send(`42["message","message to main namespace"]`)
			c.expect(`42["message-back","message to main namespace"]`)
		}},
		{"message/plain text", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`42["message",1,"2",{"3":[true]}]`)
			c.expect(`42["message-back",1,"2",{"3":[true]}]`)
		}},
		{"message/one binary attachment", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`451-["message",{"_placeholder":true,"num":0}]`)
			c.sendBinary([]byte{1, 2, 3})
			c.expect(`451-["message-back",{"_placeholder":true,"num":0}]`)
			expectBinary(c, []byte{1, 2, 3})
		}},
		{"message/two binary attachments", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
			c.sendBinary([]byte{1, 2, 3})
			c.sendBinary([]byte{4, 5, 6})
			c.expect(`452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
			expectBinary(c, []byte{1, 2, 3})
			expectBinary(c, []byte{4, 5, 6})
		}},
		{"message/plain text with ack", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`421["message-with-ack",1,"2",{"3":[true]}]`)
			c.expect(`431[1,"2",{"3":[true]}]`)
			c.send(`42456["message-with-ack",1,"2",{"3":[false]}]`)
			c.expect(`43456[1,"2",{"3":[false]}]`)
		}},
		{"message/binary attachment with ack", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`451-1["message-with-ack",{"_placeholder":true,"num":0}]`)
			c.sendBinary([]byte{1, 2, 3, 4})
			c.expect(`461-1[{"_placeholder":true,"num":0}]`)
			expectBinary(c, []byte{1, 2, 3, 4})
			c.send(`452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
			c.sendBinary([]byte{1, 2, 3})
			c.sendBinary([]byte{4, 5, 6})
			c.expect(`462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)
			expectBinary(c, []byte{1, 2, 3})
			expectBinary(c, []byte{4, 5, 6})
		}},
		{"message/invalid format unknown packet type closes", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send("4abc")
			c.expectClosed()
		}},
		{"message/invalid format payload closes", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send("42{}")
			c.expectClosed()
		}},
		{"message/invalid format ack id closes", func(t *testing.T, cs *confServer) {
			c := sioInit(t, cs, true)
			c.send(`42abc["message-with-ack",1,"2",{"3":[false]}]`)
			c.expectClosed()
		}},
		{"polling/connect, events and binary", sioOverPolling},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, cs)
		})
	}
}

// sioDial opens a WebSocket session to the Socket.IO server.
func sioDial(t *testing.T, cs *confServer, autoPong bool) *wsClient {
	t.Helper()
	return dialWSOpen(t, cs.wsURL("/socket.io/", "EIO=4&transport=websocket"), autoPong)
}

// sioInit connects to the main namespace and reads the CONNECT reply and
// the "auth" event, as the suite's initSocketIOConnection.
func sioInit(t *testing.T, cs *confServer, autoPong bool) *wsClient {
	t.Helper()
	c := sioDial(t, cs, autoPong)
	c.send("40")
	c.expectConnectReply()
	c.expect(`42["auth",{}]`)
	return c
}

// expectNspConnectReply reads `40<nsp>,{"sid":"<id>"}`.
func expectNspConnectReply(c *wsClient, nsp string) {
	c.t.Helper()
	got := c.nextText()
	rest, ok := strings.CutPrefix(got, "40"+nsp+",")
	var reply map[string]string
	if !ok || json.Unmarshal([]byte(rest), &reply) != nil || len(reply) != 1 || !sidRE.MatchString(reply["sid"]) {
		c.t.Fatalf("got %q, want 40%s,{\"sid\":...}", got, nsp)
	}
}

// sioOverPolling runs the Socket.IO handshake, an event and a binary event
// over HTTP long-polling.
func sioOverPolling(t *testing.T, cs *confServer) {
	pc := cs.poll(t, "/socket.io/")
	pc.handshake()
	pc.expectPostOK("40")
	var got []string
	for deadline := time.Now().Add(readTimeout); len(got) < 2 && time.Now().Before(deadline); {
		got = append(got, pc.packets()...)
	}
	if len(got) != 2 || !connectReplyRE.MatchString(got[0]) || got[1] != `42["auth",{}]` {
		t.Fatalf("CONNECT over polling: %q, want the reply and the auth event", got)
	}
	pc.expectPostOK(`42["message",1,"2",{"3":[true]}]`)
	pc.expectPackets(`42["message-back",1,"2",{"3":[true]}]`)
	pc.expectPostOK("451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID")
	pc.expectPackets(`451-["message-back",{"_placeholder":true,"num":0}]`, "bAQID")
	pc.expectPostOK(`421["message-with-ack","x"]`)
	pc.expectPackets(`431["x"]`)
	pc.expectPostOK("1")
}
