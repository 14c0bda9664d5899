package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Test fixtures shared by the integration tests.
const (
	testSecret = "integration-test-secret-0123456789abcdef"
	testAPIKey = "integration-test-api-key"
	testNodeID = "node-test"

	// readTimeout bounds every wait for a frame the server must send.
	readTimeout = 3 * time.Second
	// quietPeriod is how long a negative check waits for a frame that must not come.
	quietPeriod = 150 * time.Millisecond
)

var (
	sidRE       = regexp.MustCompile(`^[A-Za-z0-9_-]{20}$`)
	timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
	tsFieldRE   = regexp.MustCompile(`"timestamp":"([^"]*)"`)
)

// testNode is one node served by an httptest server.
type testNode struct {
	t   *testing.T
	n   *Node
	srv *httptest.Server
	// autoPong makes the clients dialled afterwards answer pings by themselves.
	autoPong bool
}

// newTestNode starts a node with the test secret, API key and node id;
// mod adjusts the options. The node is shut down and its server closed when
// the test ends, after the test's clients (cleanups run last-in first-out).
func newTestNode(t *testing.T, mod func(*Options)) *testNode {
	t.Helper()
	opts := Options{
		NodeID: testNodeID,
		Auth:   AuthOptions{Secret: []byte(testSecret)},
		APIKey: testAPIKey,
	}
	if mod != nil {
		mod(&opts)
	}
	n, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	srv := httptest.NewServer(n.Handler())
	tn := &testNode{t: t, n: n, srv: srv}
	t.Cleanup(func() {
		// The test's clients are closed by now (their cleanups ran first);
		// let the server see it, so Shutdown usually finds no session. (A
		// session ending while Shutdown starts can make Shutdown panic: see
		// TestShutdownWhileLastSessionEnds. It is recovered and reported
		// here rather than crashing the whole test binary.)
		for deadline := time.Now().Add(time.Second); n.open.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("cleanup: Shutdown panicked: %v", r)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil && !errors.Is(err, errShuttingDown) {
				t.Errorf("cleanup: Shutdown: %v", err)
			}
		}()
		srv.Close()
		if p := n.metrics.panics.Load(); p != 0 {
			t.Errorf("the node recovered %d panic(s) in session handlers", p)
		}
	})
	return tn
}

func (tn *testNode) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(tn.srv.URL, "http") + "/socket.io/?" + query
}

// dialURL opens a WebSocket to url and returns the raw connection and response.
func dialURL(url string, header http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: readTimeout}
	return d.Dial(url, header)
}

// respBody reads a (handshake) response body.
func respBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	if resp == nil {
		t.Fatal("no HTTP response")
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return string(b)
}

// wsFrame is one WebSocket message received by a test client.
type wsFrame struct {
	binary bool
	data   []byte
}

func (f wsFrame) String() string {
	if f.binary {
		return fmt.Sprintf("binary %x", f.data)
	}
	return fmt.Sprintf("%q", f.data)
}

// wsClient is a raw Engine.IO v4 / Socket.IO v5 client over gorilla/websocket.
// A goroutine reads every frame into an unbounded queue (so the client never
// exerts back-pressure unless the test wants it), answering pings when
// autoPong is set.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	resp *http.Response

	wmu sync.Mutex // one writer at a time (test goroutine and pong replies)

	mu      sync.Mutex
	queue   []wsFrame
	readErr error
	notify  chan struct{}
	done    chan struct{}

	autoPong atomic.Bool
	pings    atomic.Int64

	open    map[string]json.RawMessage // the open packet's fields
	openRaw string                     // the open packet as received
	sid     string                     // Engine.IO session id
	sock    string                     // Socket.IO socket id, once connected
}

// dial opens a WebSocket session and reads the open packet.
func (tn *testNode) dial(t *testing.T, header http.Header) *wsClient {
	t.Helper()
	return tn.dialPath(t, "/socket.io/", header)
}

func (tn *testNode) dialPath(t *testing.T, path string, header http.Header) *wsClient {
	t.Helper()
	url := "ws" + strings.TrimPrefix(tn.srv.URL, "http") + path + "?EIO=4&transport=websocket"
	c := dialWSHeader(t, url, header, tn.autoPong)
	c.readOpen()
	return c
}

// dialWSHeader opens a WebSocket with the given request header; the client
// is closed when the test ends.
func dialWSHeader(t *testing.T, url string, header http.Header, autoPong bool) *wsClient {
	t.Helper()
	conn, resp, err := dialURL(url, header)
	if err != nil {
		body := ""
		if resp != nil {
			body = respBody(t, resp)
		}
		t.Fatalf("dial %s: %v %s", url, err, body)
	}
	c := &wsClient{t: t, conn: conn, resp: resp, notify: make(chan struct{}, 1), done: make(chan struct{})}
	c.autoPong.Store(autoPong)
	go c.readLoop()
	t.Cleanup(c.close)
	return c
}

// readOpen reads the Engine.IO open packet and records its fields.
func (c *wsClient) readOpen() {
	c.t.Helper()
	f := c.next()
	if f.binary || len(f.data) == 0 || f.data[0] != '0' {
		c.t.Fatalf("first frame is not an open packet: %s", f)
	}
	c.openRaw = string(f.data)
	if err := json.Unmarshal(f.data[1:], &c.open); err != nil {
		c.t.Fatalf("open packet %s: %v", f, err)
	}
	_ = json.Unmarshal(c.open["sid"], &c.sid)
}

func (c *wsClient) readLoop() {
	defer close(c.done)
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		f := wsFrame{binary: typ == websocket.BinaryMessage, data: data}
		if !f.binary && string(data) == "2" {
			c.pings.Add(1)
			if c.autoPong.Load() {
				_ = c.write(websocket.TextMessage, []byte("3"))
				continue
			}
		}
		c.mu.Lock()
		c.queue = append(c.queue, f)
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
}

func (c *wsClient) write(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(readTimeout))
	return c.conn.WriteMessage(typ, b)
}

// send writes one text frame; write errors are ignored (the server may
// already have closed the connection, which the test then checks).
func (c *wsClient) send(s string) { _ = c.write(websocket.TextMessage, []byte(s)) }

func (c *wsClient) sendBinary(b []byte) { _ = c.write(websocket.BinaryMessage, b) }

var (
	errTimeout = errors.New("timed out")
	errClosed  = errors.New("connection closed")
)

// nextWithin returns the next frame, errClosed once the connection has ended
// and every frame was read, or errTimeout.
func (c *wsClient) nextWithin(d time.Duration) (wsFrame, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		readErr := c.readErr
		c.mu.Unlock()
		select {
		case <-c.done:
			c.mu.Lock()
			empty := len(c.queue) == 0
			c.mu.Unlock()
			if empty {
				return wsFrame{}, fmt.Errorf("%w: %v", errClosed, readErr)
			}
		case <-c.notify:
		case <-timer.C:
			return wsFrame{}, errTimeout
		}
	}
}

// next returns the next frame or fails the test.
func (c *wsClient) next() wsFrame {
	c.t.Helper()
	f, err := c.nextWithin(readTimeout)
	if err != nil {
		c.t.Fatalf("waiting for a frame: %v", err)
	}
	return f
}

// nextText returns the next frame, which must be text.
func (c *wsClient) nextText() string {
	c.t.Helper()
	f := c.next()
	if f.binary {
		c.t.Fatalf("got %s, want a text frame", f)
	}
	return string(f.data)
}

// expect requires the next frame to be exactly the text want.
func (c *wsClient) expect(want string) {
	c.t.Helper()
	if got := c.nextText(); got != want {
		c.t.Fatalf("got frame %q\nwant       %q", got, want)
	}
}

// expectTS requires the next frame to equal want once its "timestamp" value
// (which must look like JavaScript's toISOString) is replaced by TS.
func (c *wsClient) expectTS(want string) {
	c.t.Helper()
	got := c.nextText()
	if norm := normalizeTS(c.t, got); norm != want {
		c.t.Fatalf("got frame %q\nwant       %q (timestamps as TS)", got, want)
	}
}

// normalizeTS checks every timestamp value in s and replaces it with TS.
func normalizeTS(t *testing.T, s string) string {
	t.Helper()
	for _, m := range tsFieldRE.FindAllStringSubmatch(s, -1) {
		if !timestampRE.MatchString(m[1]) {
			t.Errorf("timestamp %q is not an ISO-8601 UTC time with milliseconds", m[1])
		}
		if ts, err := time.Parse("2006-01-02T15:04:05.000Z", m[1]); err == nil {
			if d := time.Since(ts); d < -time.Minute || d > time.Minute {
				t.Errorf("timestamp %q is %v away from now", m[1], d)
			}
		}
	}
	return tsFieldRE.ReplaceAllString(s, `"timestamp":"TS"`)
}

// expectEvent requires the next frame to be an EVENT (42) without ack id
// named name, and returns its arguments.
func (c *wsClient) expectEvent(name string) []json.RawMessage {
	c.t.Helper()
	got := c.nextText()
	var arr []json.RawMessage
	if !strings.HasPrefix(got, "42[") || json.Unmarshal([]byte(got[2:]), &arr) != nil || len(arr) == 0 {
		c.t.Fatalf("got frame %q, want event %q", got, name)
	}
	var gotName string
	if json.Unmarshal(arr[0], &gotName) != nil || gotName != name {
		c.t.Fatalf("got frame %q, want event %q", got, name)
	}
	return arr[1:]
}

// expectClosed requires the server to close the connection without sending
// any further frame.
func (c *wsClient) expectClosed() {
	c.t.Helper()
	f, err := c.nextWithin(readTimeout)
	switch {
	case err == nil:
		c.t.Fatalf("got frame %s, want the connection closed", f)
	case errors.Is(err, errTimeout):
		c.t.Fatalf("the server did not close the connection within %v", readTimeout)
	}
}

// expectNothing requires that no frame arrives for quietPeriod and that the
// connection stays open.
func (c *wsClient) expectNothing() {
	c.t.Helper()
	f, err := c.nextWithin(quietPeriod)
	switch {
	case err == nil:
		c.t.Fatalf("unexpected frame %s", f)
	case errors.Is(err, errClosed):
		c.t.Fatalf("unexpected close: %v", err)
	}
}

// expectNothingAll is expectNothing for several clients at once, waiting
// quietPeriod only once.
func expectNothingAll(t *testing.T, clients ...*wsClient) {
	t.Helper()
	time.Sleep(quietPeriod)
	for i, c := range clients {
		c.mu.Lock()
		queued := append([]wsFrame(nil), c.queue...)
		c.mu.Unlock()
		if len(queued) > 0 {
			t.Errorf("client %d: unexpected frame %s", i, queued[0])
		}
		if c.isClosed() {
			t.Errorf("client %d: unexpected close", i)
		}
	}
}

// drain discards the frames received so far.
func (c *wsClient) drain() {
	c.mu.Lock()
	c.queue = nil
	c.mu.Unlock()
}

// isClosed reports whether the connection has ended.
func (c *wsClient) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// close closes the connection and waits for the reader to stop.
func (c *wsClient) close() {
	_ = c.conn.Close()
	select {
	case <-c.done:
	case <-time.After(readTimeout):
		c.t.Errorf("the client reader did not stop")
	}
}

// connectNsp sends CONNECT to the main namespace and checks the exact reply.
func (c *wsClient) connectNsp() {
	c.t.Helper()
	c.send("40")
	c.sock = c.expectConnectReply()
}

// expectConnectReply reads `40{"sid":"<id>"}` and returns the id.
func (c *wsClient) expectConnectReply() string {
	c.t.Helper()
	got := c.nextText()
	var reply map[string]string
	if !strings.HasPrefix(got, "40{") || json.Unmarshal([]byte(got[2:]), &reply) != nil {
		c.t.Fatalf("got %q, want 40{\"sid\":...}", got)
	}
	sid, pid := reply["sid"], reply["pid"]
	want := `40{"sid":"` + sid + `"}`
	if pid != "" { // recovery on: the private session id follows
		want = `40{"sid":"` + sid + `","pid":"` + pid + `"}`
	}
	if !sidRE.MatchString(sid) || (pid != "" && !sidRE.MatchString(pid)) || got != want {
		c.t.Fatalf("CONNECT reply %q: want exactly {\"sid\":<20 URL-safe chars>} (and a pid with recovery on)", got)
	}
	if sid == c.sid {
		c.t.Fatalf("the socket id %q is the Engine.IO sid", sid)
	}
	return sid
}

// authenticate sends `authenticate` with token and expects `authenticated`.
func (c *wsClient) authenticate(token, user, email string) {
	c.t.Helper()
	c.send(`42["authenticate",{"token":"` + token + `"}]`)
	c.expect(`42["authenticated",{"userId":"` + user + `","email":"` + email + `"}]`)
}

// connect dials, joins the main namespace and returns the client.
func (tn *testNode) connect(t *testing.T) *wsClient {
	t.Helper()
	c := tn.dial(t, nil)
	c.connectNsp()
	return c
}

// authed returns a client connected and authenticated as user.
func (tn *testNode) authed(t *testing.T, user, email string) *wsClient {
	t.Helper()
	c := tn.connect(t)
	c.authenticate(mustToken(t, user, email, time.Hour), user, email)
	return c
}

// mustToken signs a valid HS256 token with the test secret.
func mustToken(t *testing.T, user, email string, ttl time.Duration) string {
	t.Helper()
	tok, err := SignToken([]byte(testSecret), user, email, ttl)
	if err != nil {
		t.Fatalf("SignToken: %v", err)
	}
	return tok
}

// signClaims signs arbitrary claims with HS256 and the given secret.
func signClaims(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return tok
}

// rawJWT builds a token from a header and claims, signed with HMAC-SHA256
// over the test secret whatever the header says (or unsigned when sign is
// false), as a forger would.
func rawJWT(header, claims map[string]any, sign bool) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	if !sign {
		return input + "."
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// eventually polls cond until it holds or fails the test after readTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// httpResult is an HTTP response read in full.
type httpResult struct {
	status int
	header http.Header
	body   string
}

// do sends an HTTP request to the node. key "" sends no Authorization header.
func (tn *testNode) do(t *testing.T, method, path, key, body string, header http.Header) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, tn.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := tn.srv.Client()
	client.Timeout = readTimeout
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return httpResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// api calls the HTTP API with the test key.
func (tn *testNode) api(t *testing.T, method, path, body string) httpResult {
	t.Helper()
	return tn.do(t, method, path, testAPIKey, body, nil)
}

// expectStatus checks the status and, when wantBody is not "", the exact body.
func expectStatus(t *testing.T, what string, r httpResult, status int, wantBody string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, r.status, status, r.body)
	}
	if wantBody != "" && r.body != wantBody {
		t.Errorf("%s: body %s\nwant %s", what, r.body, wantBody)
	}
}

// expectJSONError checks a {"error": "..."} body with the given status.
func expectJSONError(t *testing.T, what string, r httpResult, status int) {
	t.Helper()
	expectStatus(t, what, r, status, "")
	var body map[string]any
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Errorf("%s: body %q is not JSON: %v", what, r.body, err)
		return
	}
	if msg, ok := body["error"].(string); !ok || msg == "" {
		t.Errorf("%s: body %s has no error message", what, r.body)
	}
}

// jsonEqual reports whether two JSON documents are equal as values.
func jsonEqual(t *testing.T, got, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("invalid JSON %q: %v", got, err)
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("invalid wanted JSON %q: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return bytes.Equal(gb, wb)
}
