package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messaging-hub/hubnode/adapter"
)

// --- HTTP long-polling: a raw Engine.IO v4 polling client ---

// pollTimeout bounds every polling request; the held GETs of these tests
// are always released well before it.
const pollTimeout = 5 * time.Second

// connectReplyRE is a CONNECT reply to the main namespace.
var connectReplyRE = regexp.MustCompile(`^40\{"sid":"[A-Za-z0-9_-]{20}"\}$`)

// pollResult is one polling response read in full, or the request's error.
type pollResult struct {
	status int
	header http.Header
	body   string
	err    error
}

func (r pollResult) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return fmt.Sprintf("%d %q", r.status, r.body)
}

// pollClient drives one Engine.IO session over HTTP long-polling with raw
// GET and POST requests, as engine.io-client's polling transport does.
type pollClient struct {
	t       *testing.T
	hc      *http.Client
	base    string      // the endpoint, e.g. http://127.0.0.1:1234/socket.io/
	header  http.Header // sent with every request (e.g. Origin)
	sid     string
	open    map[string]json.RawMessage
	openRaw string
}

// newPollClient returns a client of the endpoint at path on srv. It shares
// srv.Client()'s transport, whose idle connections srv.Close closes.
func newPollClient(t *testing.T, srv *httptest.Server, path string) *pollClient {
	return &pollClient{
		t:    t,
		hc:   &http.Client{Transport: srv.Client().Transport, Timeout: pollTimeout},
		base: srv.URL + path,
	}
}

func (pc *pollClient) sidQuery() string {
	return "EIO=4&transport=polling&sid=" + url.QueryEscape(pc.sid)
}

// request sends one request; it never fails the test, so that it may run
// on any goroutine.
func (pc *pollClient) request(ctx context.Context, method, query, body string, hdr http.Header) pollResult {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, pc.base+"?"+query, rd)
	if err != nil {
		return pollResult{err: err}
	}
	for k, v := range pc.header {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := pc.hc.Do(req)
	if err != nil {
		return pollResult{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return pollResult{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// do sends a request and fails the test when no response comes.
func (pc *pollClient) do(method, query, body string, hdr http.Header) pollResult {
	pc.t.Helper()
	r := pc.request(context.Background(), method, query, body, hdr)
	if r.err != nil {
		pc.t.Fatalf("%s ?%s: %v", method, query, r.err)
	}
	return r
}

// textPlain is the Content-Type engine.io-client sends with its POSTs.
var textPlain = http.Header{"Content-Type": {"text/plain;charset=UTF-8"}}

// handshake opens the session and returns the handshake response.
func (pc *pollClient) handshake() pollResult {
	pc.t.Helper()
	r := pc.do(http.MethodGet, "EIO=4&transport=polling", "", nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "0{") {
		pc.t.Fatalf("polling handshake: %s, want 200 and an open packet", r)
	}
	pc.openRaw = r.body
	if err := json.Unmarshal([]byte(r.body[1:]), &pc.open); err != nil {
		pc.t.Fatalf("open packet %q: %v", r.body, err)
	}
	if err := json.Unmarshal(pc.open["sid"], &pc.sid); err != nil || pc.sid == "" {
		pc.t.Fatalf("open packet %q has no sid", r.body)
	}
	return r
}

// get polls once.
func (pc *pollClient) get() pollResult {
	pc.t.Helper()
	return pc.do(http.MethodGet, pc.sidQuery(), "", nil)
}

// post sends a payload as engine.io-client does.
func (pc *pollClient) post(body string) pollResult {
	pc.t.Helper()
	return pc.do(http.MethodPost, pc.sidQuery(), body, textPlain)
}

// getAsync starts a GET that the server may hold; the result arrives on
// the channel. The request ends at the latest when the node shuts down.
func (pc *pollClient) getAsync() <-chan pollResult {
	ch := make(chan pollResult, 1)
	query := pc.sidQuery()
	go func() { ch <- pc.request(context.Background(), http.MethodGet, query, "", nil) }()
	return ch
}

// await returns the result of a getAsync, or fails the test.
func (pc *pollClient) await(ch <-chan pollResult) pollResult {
	pc.t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			pc.t.Fatalf("held GET: %v", r.err)
		}
		return r
	case <-time.After(pollTimeout + time.Second):
		pc.t.Fatal("the held GET did not return")
		return pollResult{}
	}
}

// expectGet requires the next GET to answer 200 with exactly want.
func (pc *pollClient) expectGet(want string) {
	pc.t.Helper()
	if r := pc.get(); r.status != http.StatusOK || r.body != want {
		pc.t.Fatalf("GET: %s, want 200 %q", r, want)
	}
}

// expectPostOK requires a POST of body to be accepted.
func (pc *pollClient) expectPostOK(body string) {
	pc.t.Helper()
	if r := pc.post(body); r.status != http.StatusOK || r.body != "ok" {
		pc.t.Fatalf("POST %q: %s, want 200 \"ok\"", body, r)
	}
}

// expectEngineError requires r to be an Engine.IO error: 400, or 403 for
// Forbidden, with the JSON body {"code":code,...}.
func expectEngineError(t *testing.T, what string, r pollResult, code int) {
	t.Helper()
	status := http.StatusBadRequest
	if code == eioForbidden {
		status = http.StatusForbidden
	}
	want := fmt.Sprintf(`{"code":%d,"message":%q}`, code, eioMessages[code])
	if r.err != nil || r.status != status || r.body != want {
		t.Errorf("%s: %s, want %d %s", what, r, status, want)
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// packets polls once and returns the packets, answering pings on the way.
func (pc *pollClient) packets() []string {
	pc.t.Helper()
	r := pc.get()
	if r.status != http.StatusOK {
		pc.t.Fatalf("GET: %s, want 200", r)
	}
	var out []string
	for _, p := range strings.Split(r.body, "\x1e") {
		if p == "2" {
			pc.expectPostOK("3")
			continue
		}
		out = append(out, p)
	}
	return out
}

// expectPackets requires the next GET to carry exactly want (pings aside).
func (pc *pollClient) expectPackets(want ...string) {
	pc.t.Helper()
	got := pc.packets()
	if strings.Join(got, "\x1e") != strings.Join(want, "\x1e") {
		pc.t.Fatalf("GET packets %q, want %q", got, want)
	}
}

// authenticate joins the main namespace and authenticates as user.
func (pc *pollClient) authenticate(user, email string) {
	pc.t.Helper()
	pc.expectPostOK("40")
	if got := pc.packets(); len(got) != 1 || !connectReplyRE.MatchString(got[0]) {
		pc.t.Fatalf("CONNECT reply over polling: %q, want 40{\"sid\":...}", got)
	}
	pc.expectPostOK(`42["authenticate",{"token":"` + mustToken(pc.t, user, email, time.Hour) + `"}]`)
	pc.expectPackets(`42["authenticated",{"userId":"` + user + `","email":"` + email + `"}]`)
}

// pollingOf returns the polling transport of the session sid, or nil.
func pollingOf(n *Node, sid string) *pollingTransport {
	e := n.lookup(sid)
	if e == nil {
		return nil
	}
	p, _ := e.currentTransport().(*pollingTransport)
	return p
}

// waitHeld waits until the session's GET is held by the server.
func waitHeld(t *testing.T, n *Node, sid string) {
	t.Helper()
	eventually(t, "the GET to be held", func() bool {
		p := pollingOf(n, sid)
		if p == nil {
			return false
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.getActive
	})
}

// dialWS opens a WebSocket without reading anything (an upgrade probe).
func dialWS(t *testing.T, url string, autoPong bool) *wsClient {
	t.Helper()
	return dialWSHeader(t, url, nil, autoPong)
}

// dialWSOpen opens a WebSocket session and reads its open packet.
func dialWSOpen(t *testing.T, url string, autoPong bool) *wsClient {
	t.Helper()
	c := dialWS(t, url, autoPong)
	c.readOpen()
	return c
}

// wsBase is the WebSocket form of an httptest server's URL.
func wsBase(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

// --- Hub node over polling ---

func TestPollingAuthenticateAndReceiveEmits(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	r := pc.handshake()
	want := `0{"sid":"` + pc.sid + `","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`
	if pc.openRaw != want {
		t.Errorf("open packet %s\nwant        %s", pc.openRaw, want)
	}
	if !sidRE.MatchString(pc.sid) {
		t.Errorf("sid %q is not 20 URL-safe characters", pc.sid)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
		t.Errorf("handshake Content-Type %q", ct)
	}
	eventually(t, "the session to be counted", func() bool { return tn.n.open.Load() == 1 })

	pc.authenticate("u1", "e@x")
	ctx := context.Background()
	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); !ok {
		t.Error("the polling user is not connected after authenticating")
	}

	// A held GET is answered by an emit.
	held := pc.getAsync()
	waitHeld(t, tn.n, pc.sid)
	if err := tn.n.Service().Emit(ctx, "u1", "hello", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if r := pc.await(held); r.status != http.StatusOK || r.body != `42["hello",{"n":1}]` {
		t.Fatalf("held GET: %s, want the emit", r)
	}

	// Emits queued between polls come in one response, joined with \x1e.
	for i := 0; i < 3; i++ {
		if err := tn.n.Service().Emit(ctx, "u1", "tick", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.n.Service().EmitMessageStatusUpdate(ctx, "u1", "m1", StatusRead, "c1"); err != nil {
		t.Fatal(err)
	}
	got := pc.packets()
	if len(got) != 4 || got[0] != `42["tick",0]` || got[1] != `42["tick",1]` || got[2] != `42["tick",2]` {
		t.Fatalf("GET packets %q, want three ticks and a status update", got)
	}
	if s := normalizeTS(t, got[3]); s != `42["message_status_update",{"messageId":"m1","conversationId":"c1","status":"read","timestamp":"TS"}]` {
		t.Errorf("status update %q", s)
	}

	// A binary event from the adapter goes out as base64 after its text part.
	tn.n.DeliverLocal(&adapter.Message{
		Nsp:         "/",
		Rooms:       []string{UserRoom("u1")},
		Data:        []json.RawMessage{json.RawMessage(`"bin"`), json.RawMessage(`{"_placeholder":true,"num":0}`)},
		Attachments: [][]byte{{1, 2, 3, 4}},
	})
	pc.expectPackets(`451-["bin",{"_placeholder":true,"num":0}]`, "bAQIDBA==")

	// Client events get their answers over polling too.
	pc.expectPostOK(`421["ping-me"]`)
	got = pc.packets()
	if len(got) != 2 || normalizeTS(t, got[0]) != `42["error",{"error":"Unknown event: ping-me","code":"UNKNOWN_EVENT","timestamp":"TS"}]` ||
		got[1] != `431[{"ok":false,"error":"Unknown event: ping-me"}]` {
		t.Errorf("answer to an unknown event: %q", got)
	}

	// The client closes: its session and presence are gone.
	pc.expectPostOK("1")
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); ok {
		t.Error("the user is still connected after the client closed")
	}
	// A GET racing the close may still get the noop that releases it (the
	// sid lingers for that); after it, the session is unknown.
	if r := pc.get(); r.status == http.StatusOK && r.body == "6" {
		r = pc.get()
		expectEngineError(t, "second GET after the client closed", r, eioBadRequest)
	} else {
		expectEngineError(t, "GET after the client closed", r, eioBadRequest)
	}
}

func TestPollingResponseHeaders(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	checkGet := func(what string, r pollResult) {
		t.Helper()
		if r.status != http.StatusOK {
			t.Fatalf("%s: %s", what, r)
		}
		if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
			t.Errorf("%s: Content-Type %q, want %q", what, ct, "text/plain; charset=UTF-8")
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", what, cc)
		}
		if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(r.body)) {
			t.Errorf("%s: Content-Length %q for a body of %d bytes", what, cl, len(r.body))
		}
		// Without an Origin there is no CORS header at all.
		if v := r.header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("%s: Access-Control-Allow-Origin %q without an Origin", what, v)
		}
	}
	checkGet("handshake", pc.handshake())

	r := pc.post("40")
	if r.status != http.StatusOK || r.body != "ok" {
		t.Fatalf("POST: %s, want 200 ok", r)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html" {
		t.Errorf("POST: Content-Type %q, want text/html", ct)
	}
	if cl := r.header.Get("Content-Length"); cl != "2" {
		t.Errorf("POST: Content-Length %q, want 2", cl)
	}
	if v := r.header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Errorf("POST: Access-Control-Allow-Origin %q without an Origin", v)
	}
	r = pc.get()
	checkGet("GET", r)
	if !connectReplyRE.MatchString(r.body) {
		t.Errorf("GET body %q, want the CONNECT reply", r.body)
	}

	// A held GET released by an emit has the same headers.
	pc.expectPostOK(`42["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
	pc.expectPackets(`42["authenticated",{"userId":"u1","email":"e@x"}]`)
	held := pc.getAsync()
	waitHeld(t, tn.n, pc.sid)
	if err := tn.n.Service().Emit(context.Background(), "u1", "x", 1); err != nil {
		t.Fatal(err)
	}
	checkGet("held GET", pc.await(held))

	// Requests for other sessions.
	other := newPollClient(t, tn.srv, "/socket.io/")
	other.sid = "AAAAAAAAAAAAAAAAAAAA"
	expectEngineError(t, "GET of an unknown sid", other.get(), eioUnknownSID)
	expectEngineError(t, "POST to an unknown sid", other.post("40"), eioUnknownSID)
	ws := tn.dial(t, nil)
	other.sid = ws.sid
	expectEngineError(t, "polling GET with a WebSocket session's sid", other.get(), eioBadRequest)
	expectEngineError(t, "polling POST with a WebSocket session's sid", other.post("40"), eioBadRequest)
	// The WebSocket session is not disturbed by them.
	ws.connectNsp()
	pc.expectPostOK("1")
}

func TestPollingCORS(t *testing.T) {
	const origin = "https://app.example.com"
	tn := newTestNode(t, func(o *Options) { o.AllowedOrigins = []string{origin} })
	checkCORS := func(what string, r pollResult, wantOrigin string) {
		t.Helper()
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != wantOrigin {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got, wantOrigin)
		}
		wantCred := "true"
		if wantOrigin == "" {
			wantCred = ""
		}
		if got := r.header.Get("Access-Control-Allow-Credentials"); got != wantCred {
			t.Errorf("%s: Access-Control-Allow-Credentials %q, want %q", what, got, wantCred)
		}
	}
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.header = http.Header{"Origin": {origin}}

	// Preflight (extraHeaders such as Authorization trigger one).
	r := pc.do(http.MethodOptions, "EIO=4&transport=polling", "", http.Header{
		"Access-Control-Request-Method":  {"POST"},
		"Access-Control-Request-Headers": {"authorization,content-type"},
	})
	if r.status != http.StatusNoContent {
		t.Errorf("preflight: status %d, want 204", r.status)
	}
	checkCORS("preflight", r, origin)
	if m := r.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "GET") || !strings.Contains(m, "POST") {
		t.Errorf("preflight: Access-Control-Allow-Methods %q, want GET and POST", m)
	}
	if h := r.header.Get("Access-Control-Allow-Headers"); h != "authorization,content-type" {
		t.Errorf("preflight: Access-Control-Allow-Headers %q, want the requested headers", h)
	}
	if v := r.header.Values("Vary"); !strings.Contains(strings.Join(v, ","), "Origin") {
		t.Errorf("preflight: Vary %q, want Origin", v)
	}

	// The session's GETs and POSTs carry the exact origin with credentials.
	checkCORS("handshake", pc.handshake(), origin)
	r = pc.post("40")
	if r.status != http.StatusOK || r.body != "ok" {
		t.Fatalf("POST: %s", r)
	}
	checkCORS("POST", r, origin)
	r = pc.get()
	if r.status != http.StatusOK || !connectReplyRE.MatchString(r.body) {
		t.Fatalf("GET: %s", r)
	}
	checkCORS("GET", r, origin)

	// So do error responses.
	bad := newPollClient(t, tn.srv, "/socket.io/")
	bad.header = pc.header
	for _, tc := range []struct {
		name, method, query string
		code                int
	}{
		{"unknown sid", http.MethodGet, "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", eioUnknownSID},
		{"EIO=3", http.MethodGet, "EIO=3&transport=polling", eioUnsupportedVersion},
		{"unknown transport", http.MethodGet, "EIO=4&transport=flash", eioTransportUnknown},
		{"POST handshake", http.MethodPost, "EIO=4&transport=polling", eioBadHandshakeMethod},
	} {
		r := bad.do(tc.method, tc.query, "", nil)
		expectEngineError(t, tc.name, r, tc.code)
		checkCORS(tc.name, r, origin)
	}
	// A payload error closes the session; its 400 carries the headers too.
	r = pc.post("xyz")
	expectEngineError(t, "undecodable POST", r, eioBadRequest)
	checkCORS("undecodable POST", r, origin)

	// A disallowed origin is refused with 403 and no CORS header, on the
	// handshake, on an existing session and on preflight.
	evil := newPollClient(t, tn.srv, "/socket.io/")
	evil.header = http.Header{"Origin": {"https://evil.example.com"}}
	r = evil.do(http.MethodGet, "EIO=4&transport=polling", "", nil)
	expectEngineError(t, "handshake from a disallowed origin", r, eioForbidden)
	checkCORS("handshake from a disallowed origin", r, "")
	victim := newPollClient(t, tn.srv, "/socket.io/")
	victim.handshake()
	evil.sid = victim.sid
	r = evil.get()
	expectEngineError(t, "GET from a disallowed origin", r, eioForbidden)
	checkCORS("GET from a disallowed origin", r, "")
	r = evil.post("40")
	expectEngineError(t, "POST from a disallowed origin", r, eioForbidden)
	checkCORS("POST from a disallowed origin", r, "")
	r = evil.do(http.MethodOptions, "EIO=4&transport=polling", "", http.Header{"Access-Control-Request-Method": {"POST"}})
	checkCORS("preflight from a disallowed origin", r, "")
	// The session attacked with its sid is untouched.
	victim.expectPostOK("40")
	if got := victim.packets(); len(got) != 1 || !connectReplyRE.MatchString(got[0]) {
		t.Errorf("the victim's session: %q", got)
	}
	victim.expectPostOK("1")

	// "*" still reflects the exact origin, never "*" (credentials need that).
	anyNode := newTestNode(t, func(o *Options) { o.AllowedOrigins = []string{"*"} })
	ac := newPollClient(t, anyNode.srv, "/socket.io/")
	ac.header = http.Header{"Origin": {"https://whoever.example.org"}}
	checkCORS(`handshake with AllowedOrigins ["*"]`, ac.handshake(), "https://whoever.example.org")
	r = ac.post("1")
	checkCORS(`POST with AllowedOrigins ["*"]`, r, "https://whoever.example.org")
}

func TestPollingPostAboveMaxPayload(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.MaxPayload = 2048 })
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	if got := pc.open["maxPayload"]; string(got) != "2048" {
		t.Errorf("open packet maxPayload %s, want 2048", got)
	}
	// Exactly MaxPayload bytes pass: "66" and 1023 × "\x1e6" (noops).
	exact := "66" + strings.Repeat("\x1e6", 1023)
	if len(exact) != 2048 {
		t.Fatalf("test payload is %d bytes", len(exact))
	}
	pc.expectPostOK(exact)

	held := pc.getAsync()
	waitHeld(t, tn.n, pc.sid)
	r := pc.post(exact + "6")
	if r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of MaxPayload+1 bytes: %s, want 413", r)
	}
	// The session is closed: the held GET gets the close packet, later
	// requests are refused.
	if r := pc.await(held); r.status != http.StatusOK || r.body != "1" {
		t.Errorf("held GET: %s, want 200 \"1\"", r)
	}
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	expectEngineError(t, "GET after 413", pc.get(), eioBadRequest)

	// Without a held GET, too.
	pc2 := newPollClient(t, tn.srv, "/socket.io/")
	pc2.handshake()
	if r := pc2.post("4" + strings.Repeat("x", 4096)); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of 4097 bytes: %s, want 413", r)
	}
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	expectEngineError(t, "GET after 413", pc2.get(), eioBadRequest)
}

func TestPollingOctetStreamPostRefused(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	r := pc.do(http.MethodPost, pc.sidQuery(), "40", http.Header{"Content-Type": {"application/octet-stream"}})
	expectEngineError(t, "octet-stream POST", r, eioBadRequest)
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	expectEngineError(t, "GET after the refused POST", pc.get(), eioBadRequest)
}

// TestPollingPostAfterServerCloseRefused: once the server has closed a
// polling session (here: ping timeout), Node forgets the sid and answers
// every later request 400. A POST must not be answered "ok" as if its
// packets had been received.
func TestPollingPostAfterServerCloseRefused(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 100 * time.Millisecond
	})
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	eventually(t, "the ping timeout", func() bool { return tn.n.open.Load() == 0 })
	r := pc.post(`40`)
	if r.status != http.StatusBadRequest {
		t.Errorf("POST to a session closed by the server: %s, want 400 (the packets were dropped)", r)
	}
	expectEngineError(t, "GET of a session closed by the server", pc.get(), eioBadRequest)
}

func TestPollingOverlappingPostClosesSession(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()

	// A first POST whose body is still being sent.
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, pc.base+"?"+pc.sidQuery(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	first := make(chan pollResult, 1)
	go func() {
		resp, err := pc.hc.Do(req)
		if err != nil {
			first <- pollResult{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		first <- pollResult{status: resp.StatusCode, body: string(b)}
	}()
	defer func() { _ = pw.Close() }()
	eventually(t, "the first POST to be in progress", func() bool {
		p := pollingOf(tn.n, pc.sid)
		if p == nil {
			return false
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.posting
	})

	expectEngineError(t, "overlapping POST", pc.post("6"), eioBadRequest)
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	_, _ = pw.Write([]byte("6"))
	_ = pw.Close()
	if r := pc.await(first); r.err != nil {
		t.Errorf("first POST: %v", r.err)
	}
	expectEngineError(t, "GET after the overlap", pc.get(), eioBadRequest)
}

func TestPollingClientAbortedGetClosesSession(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	pc.authenticate("u1", "e@x")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan pollResult, 1)
	go func() { done <- pc.request(ctx, http.MethodGet, pc.sidQuery(), "", nil) }()
	waitHeld(t, tn.n, pc.sid)
	cancel()
	if r := <-done; !errors.Is(r.err, context.Canceled) {
		t.Errorf("aborted GET: %s", r)
	}
	// Node: "poll connection closed prematurely" ends the session.
	eventually(t, "the session to end", func() bool { return tn.n.open.Load() == 0 })
	if ok, _ := tn.n.Service().IsUserConnected(context.Background(), "u1"); ok {
		t.Error("the user is still connected")
	}
	expectEngineError(t, "GET after the abort", pc.get(), eioBadRequest)
}

// TestPollingUpgradeDuringEmitStream upgrades a polling client to
// WebSocket while emits keep coming: every event arrives exactly once, in
// order, across the two transports.
func TestPollingUpgradeDuringEmitStream(t *testing.T) {
	// The queue holds whatever accumulates while the client is busy upgrading.
	tn := newTestNode(t, func(o *Options) { o.WriteQueue = 1024 })
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	pc.authenticate("u1", "e@x")

	const total = 500
	probing := make(chan struct{}) // closed once the client has sent 2probe
	var closeProbing sync.Once
	startProbe := func() { closeProbing.Do(func() { close(probing) }) }
	emitDone := make(chan struct{})
	var emitErr error
	go func() {
		defer close(emitDone)
		ctx := context.Background()
		for i := 0; i < total; i++ {
			if i == 400 { // make sure the upgrade happens midway
				select {
				case <-probing:
				case <-time.After(10 * time.Second):
				}
			}
			if err := tn.n.Service().Emit(ctx, "u1", "n", i); err != nil {
				emitErr = fmt.Errorf("emit %d: %w", i, err)
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	t.Cleanup(func() {
		startProbe()
		<-emitDone
	})

	var got []int
	transport := "polling"
	record := func(frame string) {
		t.Helper()
		rest, ok := strings.CutPrefix(frame, `42["n",`)
		rest, ok2 := strings.CutSuffix(rest, "]")
		i, err := strconv.Atoi(rest)
		if !ok || !ok2 || err != nil {
			t.Fatalf("unexpected packet %q over %s", frame, transport)
		}
		// Each number exactly once, in order.
		if i != len(got) {
			t.Fatalf("over %s: got number %d, want %d (lost, duplicated or reordered)", transport, i, len(got))
		}
		got = append(got, i)
	}
	for len(got) < 100 {
		for _, p := range pc.packets() {
			record(p)
		}
	}

	// Upgrade: probe, drain the released GET, then "5".
	ws := dialWS(t, tn.wsURL("EIO=4&transport=websocket&sid="+pc.sid), false)
	ws.send("2probe")
	startProbe()
	ws.expect("3probe")
	for _, p := range pc.packets() {
		if p != "6" {
			record(p)
		}
	}
	viaPolling := len(got)
	transport = "websocket"
	ws.send("5")
	for len(got) < total {
		f := ws.next()
		if f.binary {
			t.Fatalf("unexpected frame %s", f)
		}
		record(string(f.data))
	}
	<-emitDone
	if emitErr != nil {
		t.Fatal(emitErr)
	}
	ws.expectNothing()
	t.Logf("%d events over polling, %d over WebSocket", viaPolling, total-viaPolling)
	if viaPolling == total {
		t.Error("no event arrived over the WebSocket")
	}
	if tn.n.metrics.upgrades.Load() != 1 {
		t.Errorf("upgrades = %d, want 1", tn.n.metrics.upgrades.Load())
	}
	// Polling is over for this session.
	expectEngineError(t, "GET after the upgrade", pc.get(), eioBadRequest)
	expectEngineError(t, "POST after the upgrade", pc.post("6"), eioBadRequest)
	// The socket lives on: events go to the WebSocket.
	if err := tn.n.Service().Emit(context.Background(), "u1", "after", true); err != nil {
		t.Fatal(err)
	}
	ws.expect(`42["after",true]`)
	if tn.n.open.Load() != 1 {
		t.Errorf("open = %d, want 1", tn.n.open.Load())
	}
}

func TestPollingUpgradeAbortedKeepsPolling(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()

	// A probe WebSocket that sends anything but 2probe/5 is dropped.
	ws := dialWS(t, tn.wsURL("EIO=4&transport=websocket&sid="+pc.sid), false)
	ws.send("4hello")
	ws.expectClosed()
	// "5" before "2probe" is no upgrade either.
	ws2 := dialWS(t, tn.wsURL("EIO=4&transport=websocket&sid="+pc.sid), false)
	ws2.send("5")
	ws2.expectClosed()

	// The session carries on over polling.
	pc.authenticate("u1", "e@x")

	// And can still upgrade.
	ws3 := dialWS(t, tn.wsURL("EIO=4&transport=websocket&sid="+pc.sid), false)
	ws3.send("2probe")
	ws3.expect("3probe")
	pc.expectGet("6")
	ws3.send("5")
	if err := tn.n.Service().Emit(context.Background(), "u1", "x", 1); err != nil {
		t.Fatal(err)
	}
	ws3.expect(`42["x",1]`)
}

// TestPollingAbandonedSessionReaped: a client that stops polling never
// sees the pings, never pongs, and its session is reaped by the heartbeat.
func TestPollingAbandonedSessionReaped(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 100 * time.Millisecond
	})
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	pc.authenticate("u1", "e@x")
	if got := tn.n.open.Load(); got != 1 {
		t.Fatalf("open = %d, want 1", got)
	}
	abandoned := time.Now()
	eventually(t, "the abandoned session to be reaped", func() bool { return tn.n.open.Load() == 0 })
	if d := time.Since(abandoned); d > time.Second {
		t.Errorf("reaped after %v, want about PingInterval+PingTimeout (200ms)", d)
	}
	ctx := context.Background()
	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); ok {
		t.Error("the reaped user is still connected")
	}
	if u := tn.n.users.Load(); u != 0 {
		t.Errorf("users = %d, want 0", u)
	}
	// The client comes back: its session is gone.
	expectEngineError(t, "GET of the reaped session", pc.get(), eioBadRequest)
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPollingHeldGetsCostNoCPU: a held GET parks its goroutine; 200 of them
// leave the process idle, and release every goroutine when answered.
func TestPollingHeldGetsCostNoCPU(t *testing.T) {
	tn := newTestNode(t, nil)
	hc := newPollClient(t, tn.srv, "/socket.io/").hc
	hc.CloseIdleConnections()
	baseline := runtime.NumGoroutine()

	const sessions = 200
	clients := make([]*pollClient, sessions)
	for i := range clients {
		clients[i] = newPollClient(t, tn.srv, "/socket.io/")
		clients[i].handshake()
	}
	held := make([]<-chan pollResult, sessions)
	for i, pc := range clients {
		held[i] = pc.getAsync()
	}
	eventually(t, "every GET to be held", func() bool {
		n := 0
		for _, pc := range clients {
			if p := pollingOf(tn.n, pc.sid); p != nil {
				p.mu.Lock()
				if p.getActive {
					n++
				}
				p.mu.Unlock()
			}
		}
		return n == sessions
	})
	peak := runtime.NumGoroutine()

	// Measure over 500 ms; a second window forgives a one-off burst (GC,
	// another package's test process on the same CPU).
	runtime.GC()
	const window = 500 * time.Millisecond
	var used time.Duration
	for attempt := 0; attempt < 2; attempt++ {
		before := cpuTime(t)
		time.Sleep(window)
		used = cpuTime(t) - before
		if used < 50*time.Millisecond {
			break
		}
	}
	t.Logf("%d held GETs: %v CPU in %v, %d goroutines (baseline %d)", sessions, used, window, peak, baseline)
	if used >= 50*time.Millisecond {
		t.Errorf("the process used %v CPU in %v with %d held GETs, want under 50ms", used, window, sessions)
	}

	// Release every GET (the clients close), then the goroutines go away.
	for _, pc := range clients {
		pc.expectPostOK("1")
	}
	for i, pc := range clients {
		if r := pc.await(held[i]); r.status != http.StatusOK || r.body != "6" {
			t.Errorf("session %d: released GET %s, want 200 \"6\"", i, r)
		}
	}
	eventually(t, "the sessions to end", func() bool { return tn.n.open.Load() == 0 })
	eventually(t, "the goroutines to return to the baseline", func() bool {
		hc.CloseIdleConnections()
		return runtime.NumGoroutine() <= baseline
	})
}

// TestPollingWriteQueueBound: a polling user who stops polling is cut once
// WriteQueue packets wait for it and maxHeldFrames more are held back;
// nobody else is affected.
func TestPollingWriteQueueBound(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.WriteQueue = 16 })
	ctx := context.Background()
	sv := tn.n.Service()
	fast := tn.authed(t, "fast", "fast@x")
	slow := newPollClient(t, tn.srv, "/socket.io/")
	slow.handshake()
	slow.authenticate("slow", "s@x")
	steady := newPollClient(t, tn.srv, "/socket.io/")
	steady.handshake()
	steady.authenticate("steady", "t@x")

	const events = 1200 // above WriteQueue + maxHeldFrames
	if events <= 16+maxHeldFrames+100 {
		t.Fatal("too few events to overflow the held frames")
	}
	var slowest time.Duration
	var steadyGot []string
	for i := 0; i < events; i++ {
		t0 := time.Now()
		if err := sv.Emit(ctx, "slow", "bulk", i); err != nil {
			t.Fatalf("emit %d to the slow user: %v", i, err)
		}
		if err := sv.Emit(ctx, "fast", "tick", i); err != nil {
			t.Fatalf("emit %d to the fast user: %v", i, err)
		}
		if i%100 == 0 { // a polling user who keeps polling is not cut
			if err := sv.Emit(ctx, "steady", "tock", i); err != nil {
				t.Fatal(err)
			}
			steadyGot = append(steadyGot, steady.packets()...)
		}
		if d := time.Since(t0); d > slowest {
			slowest = d
		}
		if i >= 4 { // the fast client keeps up, a few events behind at most
			fast.expect(fmt.Sprintf(`42["tick",%d]`, i-4))
		}
	}
	for i := events - 4; i < events; i++ {
		fast.expect(fmt.Sprintf(`42["tick",%d]`, i))
	}
	if slowest > time.Second {
		t.Errorf("an emit took %v: emits must not block on a slow polling client", slowest)
	}
	if n := tn.n.metrics.slowConsumers.Load(); n < 1 {
		t.Errorf("slowConsumers = %d, want at least 1", n)
	}
	eventually(t, "the slow session to be closed", func() bool { return tn.n.open.Load() == 2 })
	if ok, _ := sv.IsUserConnected(ctx, "slow"); ok {
		t.Error("the slow user is still connected")
	}
	for _, u := range []string{"fast", "steady"} {
		if ok, _ := sv.IsUserConnected(ctx, u); !ok {
			t.Errorf("user %s was disconnected", u)
		}
	}
	if len(steadyGot) != events/100 {
		t.Errorf("the steady polling user got %q", steadyGot)
	}
	for i, p := range steadyGot {
		if want := fmt.Sprintf(`42["tock",%d]`, i*100); p != want {
			t.Errorf("steady packet %d: %q, want %q", i, p, want)
		}
	}
	// The slow client polls again at last: its session is over.
	r := slow.get()
	if r.status != http.StatusBadRequest && !(r.status == http.StatusOK && strings.HasSuffix(r.body, "1")) {
		t.Errorf("GET of the cut session: %s, want 400 (or the close packet)", r)
	}
	fast.expectNothing()
	steady.expectPostOK("1")
}

func TestPollingShutdownAnswersHeldGet(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	pc.authenticate("u1", "e@x")
	held := pc.getAsync()
	waitHeld(t, tn.n, pc.sid)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := tn.n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The close packet alone: no 41, so the client reconnects elsewhere.
	if r := pc.await(held); r.status != http.StatusOK || r.body != "1" {
		t.Errorf("held GET at shutdown: %s, want 200 \"1\"", r)
	}
	if n := tn.n.open.Load(); n != 0 {
		t.Errorf("open = %d after Shutdown", n)
	}
	r := newPollClient(t, tn.srv, "/socket.io/").do(http.MethodGet, "EIO=4&transport=polling", "", nil)
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("handshake after Shutdown: %s, want 503", r)
	}
}

// TestPollingServerDisconnectFlushedBeforeClose: a DISCONNECT the server
// sends as it closes the session goes out before the close packet, in its
// own response (socket.io-client would drop it if both came together).
func TestPollingServerDisconnectFlushedBeforeClose(t *testing.T) {
	tn := newTestNode(t, nil)
	pc := newPollClient(t, tn.srv, "/socket.io/")
	pc.handshake()
	pc.authenticate("u1", "e@x")
	if err := tn.n.Service().DisconnectUser(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	pc.expectGet("41")
	pc.expectGet("1")
	expectEngineError(t, "GET after the close packet", pc.get(), eioBadRequest)
	if n := tn.n.open.Load(); n != 0 {
		t.Errorf("open = %d, want 0", n)
	}
}
