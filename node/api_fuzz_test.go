package node

// Fuzz targets of the node's HTTP entry points that take attacker- or
// caller-controlled bodies: the emit API (POST /api/v1/emit and the five
// typed endpoints) and the POST of an HTTP long-polling session. Each drives
// the real gin handler in-process (n.Handler().ServeHTTP on an
// httptest.ResponseRecorder): no listener, no goroutine per iteration. The
// node is built once per target and shut down in f.Cleanup, so goleak
// (TestMain) still finds nothing behind.
//
//	go test -run='^$' -fuzz=FuzzEmitBody -fuzztime=30s ./node/
//	go test -run='^$' -fuzz=FuzzTypedEventBody -fuzztime=30s ./node/
//	go test -run='^$' -fuzz=FuzzPollingPayload -fuzztime=30s ./node/
//
// The seeds are the README's examples plus hostile bodies; the committed
// corpus is in testdata/fuzz/<FuzzName>/.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/node/engineio"
	"github.com/messaging-hub/hubnode/node/socketio"
)

// fuzzSecret is both the JWT secret and the API key of the fuzzed nodes.
const fuzzSecret = "0123456789abcdef0123"

// fuzzRecordingAdapter is the default memory adapter, unchanged, that also keeps
// every broadcast it is handed, so a target can check what a 202 really
// sent (and that a refusal sent nothing).
type fuzzRecordingAdapter struct {
	adapter.Adapter
	mu   sync.Mutex
	sent []*adapter.Message
}

func (r *fuzzRecordingAdapter) Broadcast(ctx context.Context, msg *adapter.Message) error {
	r.mu.Lock()
	r.sent = append(r.sent, msg)
	r.mu.Unlock()
	return r.Adapter.Broadcast(ctx, msg)
}

// take returns and forgets the broadcasts recorded so far.
func (r *fuzzRecordingAdapter) take() []*adapter.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sent
	r.sent = nil
	return s
}

type fuzzNode struct {
	n   *Node
	h   http.Handler
	rec *fuzzRecordingAdapter
}

// newFuzzNode builds and starts one node for a whole fuzz target, with the
// options of a production node (defaults everywhere) but for the recording
// wrapper around the default adapter.
func newFuzzNode(f *testing.F) *fuzzNode {
	f.Helper()
	rec := &fuzzRecordingAdapter{Adapter: adapter.NewMemory()}
	n, err := New(Options{Auth: AuthOptions{Secret: []byte(fuzzSecret)}, APIKey: fuzzSecret, Adapter: rec})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	if err := n.Start(context.Background()); err != nil {
		f.Fatalf("Start: %v", err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil && !errors.Is(err, errShuttingDown) {
			f.Errorf("cleanup: Shutdown: %v", err)
		}
		_ = n.adapter.Close()
	})
	return &fuzzNode{n: n, h: n.Handler(), rec: rec}
}

// serve runs one request through the node's handler.
func (fn *fuzzNode) serve(method, target string, body []byte, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	fn.h.ServeHTTP(w, req)
	return w
}

var fuzzAPIHeader = http.Header{
	"Authorization": {"Bearer " + fuzzSecret},
	"Content-Type":  {"application/json"},
}

// checkNoPanic fails when any handler recovered a panic: the recovery
// middleware turns it into a 500, which must never happen.
func (fn *fuzzNode) checkNoPanic(t *testing.T) {
	t.Helper()
	if p := fn.n.metrics.panics.Load(); p != 0 {
		t.Fatalf("the node recovered %d panic(s)", p)
	}
}

// fuzzCheckAPIAnswer checks an API answer: 202 {"accepted": want}, or 400/413
// with a JSON {"error": "..."} body. It returns the status.
func fuzzCheckAPIAnswer(t *testing.T, w *httptest.ResponseRecorder, want int) int {
	t.Helper()
	body := w.Body.Bytes()
	switch w.Code {
	case http.StatusAccepted:
		var got map[string]json.RawMessage
		if err := json.Unmarshal(body, &got); err != nil || len(got) != 1 {
			t.Fatalf("202 body %q: want exactly {\"accepted\": n}", body)
		}
		if string(got["accepted"]) != fmt.Sprint(want) {
			t.Fatalf("202 body %q: want {\"accepted\":%d}", body, want)
		}
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		fuzzCheckJSONError(t, w, "error")
	default:
		t.Fatalf("status %d (body %q): want 202, 400 or 413", w.Code, body)
	}
	return w.Code
}

// fuzzCheckJSONError checks a JSON error body holding a non-empty string under key.
func fuzzCheckJSONError(t *testing.T, w *httptest.ResponseRecorder, key string) {
	t.Helper()
	body := w.Body.Bytes()
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%d with Content-Type %q (body %q): want a JSON error", w.Code, ct, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%d body %q is not a JSON object: %v", w.Code, body, err)
	}
	if msg, ok := got[key].(string); !ok || msg == "" {
		t.Fatalf("%d body %q: want a non-empty string %q", w.Code, body, key)
	}
}

// fuzzCheckFrame checks one broadcast the API accepted: it goes to the user's
// room only, its frame is valid UTF-8 (browsers fail a WebSocket on an
// invalid text frame, which would disconnect every tab of the user), fits
// MAX_PAYLOAD, and decodes to the event name followed by its arguments.
func fuzzCheckFrame(t *testing.T, n *Node, msg *adapter.Message, userID, event string) []json.RawMessage {
	t.Helper()
	if len(msg.Rooms) != 1 || msg.Rooms[0] != UserRoom(userID) || len(msg.Except) != 0 || msg.Nsp != "/" {
		t.Fatalf("broadcast to nsp %q rooms %q except %q: want only room %q", msg.Nsp, msg.Rooms, msg.Except, UserRoom(userID))
	}
	frame := msg.Frame
	if !utf8.Valid(frame) {
		t.Fatalf("accepted emit %q produced an invalid UTF-8 text frame %q", event, frame)
	}
	if int64(len(frame)) > n.opts.MaxPayload {
		t.Fatalf("frame of %d bytes above MAX_PAYLOAD", len(frame))
	}
	if !bytes.HasPrefix(frame, []byte("42[")) {
		t.Fatalf("frame %q: want 42[...]", frame)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(frame[2:], &arr); err != nil || len(arr) == 0 {
		t.Fatalf("frame %q is not a JSON event array: %v", frame, err)
	}
	var name string
	if err := json.Unmarshal(arr[0], &name); err != nil || name != event {
		t.Fatalf("frame %q: event name %q, want %q", frame, arr[0], event)
	}
	if socketio.IsReserved(name) {
		t.Fatalf("frame %q carries a reserved event name", frame)
	}
	return arr[1:]
}

// fuzzSameJSON reports whether a and b are the same JSON text once
// compacted: the API passes data through untouched (numbers beyond float64
// and key order included).
func fuzzSameJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}

// fuzzing reports whether the test binary runs with -test.fuzz.
func fuzzing() bool {
	fl := flag.Lookup("test.fuzz")
	return fl != nil && fl.Value.String() != ""
}

// fuzzRoomsEmpty reports whether no room has a local member left.
func fuzzRoomsEmpty(ri *roomIndex) bool {
	for i := range ri.shards {
		sh := &ri.shards[i]
		sh.mu.RLock()
		n := len(sh.rooms)
		sh.mu.RUnlock()
		if n != 0 {
			return false
		}
	}
	return true
}

// fuzzHostileJSON are bodies no client should send; each must get a 400, never
// a panic or a 5xx.
func fuzzHostileJSON() []string {
	// One level beyond encoding/json's nesting limit (10,000).
	deep := strings.Repeat("[", 10_001) + strings.Repeat("]", 10_001)
	deepObj := strings.Repeat(`{"a":`, 10_001) + "1" + strings.Repeat("}", 10_001)
	return []string{
		"", " ", "null", "true", "0", `""`, "[]", "[null]", "{}", "[{}]", "{", "[", `{"userId":`,
		deep, deepObj,
		`{"userId":"42","event":"x","data":` + deep + `}`,
		`{"userId":"42","event":"x","data":1e999999999}`,
		`{"userId":"42","event":"x","data":-123456789012345678901234567890.5e-400}`,
		`{"userId":"42","event":"x","data":"\ud800"}`,
		"{\"userId\":\"4\xff2\",\"event\":\"x\",\"data\":1}",
		"{\"userId\":\"42\",\"event\":\"x\xc3\",\"data\":1}",
		"\xef\xbb\xbf{\"userId\":\"42\",\"event\":\"x\"}",
		`{"userId":"42","userId":"43","event":"x","event":"y"}`,
		`{"userId":"42","UserID":"43","EVENT":"x"}`,
		`{"userId":42,"event":"x"}`,
		`{"userId":"42","event":"x","extra":1}`,
		`{"userId":"42","event":"x"} {"userId":"42","event":"y"}`,
		`{"userId":"42","event":"x"}garbage`,
		`{"userId":"42","event":"x","data":1}` + "\n",
		`{"userId":"","event":"x"}`,
		`{"userId":"42","event":""}`,
		`{"userId":"` + strings.Repeat("u", 257) + `","event":"x"}`,
		`{"userId":"42","event":"` + strings.Repeat("e", 257) + `"}`,
		`{"userId":"42","event":"connect"}`, `{"userId":"42","event":"connect_error"}`,
		`{"userId":"42","event":"disconnect"}`, `{"userId":"42","event":"disconnecting"}`,
		`{"userId":"42","event":"newListener"}`, `{"userId":"42","event":"removeListener"}`,
		`[{"userId":"42","event":"ok"},{"userId":"42","event":"disconnect"}]`,
		"\x00", "\xff\xfe", "{\"userId\":\"42\",\"event\":\"x\",\"data\":\"\x01\"}",
	}
}

// batch returns a JSON array of n emits.
func fuzzBatch(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"userId":"u%d","event":"e","data":%d}`, i, i)
	}
	return "[" + strings.Join(items, ",") + "]"
}

// FuzzEmitBody posts fuzzed bodies to POST /api/v1/emit. Properties: no
// panic; 202 {"accepted": n} with n the number of items and exactly n
// broadcasts, each a valid frame of its item; or 400/413 with a JSON
// {"error"} and nothing broadcast (every item is validated before any is
// emitted).
func FuzzEmitBody(f *testing.F) {
	fn := newFuzzNode(f)
	for _, s := range []string{
		// The README's shapes.
		`{"userId":"42","event":"new_message","data":{"message":{"id":"m1","text":"hi"},"conversation":{"id":"c1"}}}`,
		`{"userId":"42","event":"maintenance","data":{"at":"2026-01-01T00:00:00Z"}}`,
		`{"userId":"42","event":"ping_me"}`,
		`{"userId":"42","event":"x","data":null}`,
		`[{"userId":"42","event":"new_message","data":{"message":{"id":"m1"}}},{"userId":"7","event":"unread_count_update","data":{"unreadCounts":{"whatsapp":3},"totalUnread":3}}]`,
		` [ {"userId":"42","event":"a","data":[1,2,{"b":"ü€😀"}]} ] `,
		`{"userId":"42","event":"ünïcödé 😀","data":"\u2028\u2029<>&"}`,
		fuzzBatch(1000), fuzzBatch(1001),
	} {
		f.Add([]byte(s))
	}
	for _, s := range fuzzHostileJSON() {
		f.Add([]byte(s))
	}
	// Regression: an item above MAX_PAYLOAD after a valid one. The batch
	// must be refused as a whole (400) with nothing emitted; it emitted the
	// first item, then answered 400 (see the report of issue 6).
	// (A megabyte seed would slow the mutator for nothing: it runs with
	// go test, not while fuzzing.)
	if !fuzzing() {
		f.Add([]byte(`[{"userId":"42","event":"first","data":1},{"userId":"42","event":"second","data":"` + strings.Repeat("x", 1_000_000) + `"}]`))
	}
	// Regression: a stray closing bracket after the object was accepted.
	f.Add([]byte(`{"userId":"42","event":"x"}]`))
	// Regression: invalid UTF-8 inside data reached clients in a text frame.
	f.Add([]byte("{\"userId\":\"42\",\"event\":\"new_message\",\"data\":{\"text\":\"caf\xe9\"}}"))

	f.Fuzz(func(t *testing.T, body []byte) {
		fn.rec.take()
		w := fn.serve(http.MethodPost, "/api/v1/emit", body, fuzzAPIHeader)
		fn.checkNoPanic(t)
		sent := fn.rec.take()

		// The expected item count, computed independently of the handler
		// (from the first JSON value of the body: see bugTrailing).
		isArray := false
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
			isArray = true
		}
		var items []emitRequest
		if isArray {
			_ = json.NewDecoder(bytes.NewReader(body)).Decode(&items)
		} else {
			items = make([]emitRequest, 1)
			_ = json.NewDecoder(bytes.NewReader(body)).Decode(&items[0])
		}
		if fuzzCheckAPIAnswer(t, w, len(items)) != http.StatusAccepted {
			if len(sent) != 0 {
				t.Fatalf("answered %d %q but emitted %d event(s): a refused request must emit nothing", w.Code, w.Body.Bytes(), len(sent))
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		if len(items) < 1 || len(items) > maxBatch {
			t.Fatalf("accepted %d items: want 1..%d", len(items), maxBatch)
		}
		if len(sent) != len(items) {
			t.Fatalf("202 for %d items but %d broadcasts", len(items), len(sent))
		}
		for i, it := range items {
			args := fuzzCheckFrame(t, fn.n, sent[i], it.UserID, it.Event)
			switch {
			case it.Data == nil && len(args) != 0:
				t.Fatalf("item %d without data sent arguments %q", i, args)
			case it.Data != nil && (len(args) != 1 || !fuzzSameJSON(args[0], it.Data)):
				t.Fatalf("item %d: data %q sent as %q", i, it.Data, args)
			}
		}
	})
}

// fuzzTypedEvents are the five typed endpoints, chosen by the fuzzed selector.
var fuzzTypedEvents = []string{EventNewMessage, EventMessageStatusUpdate, EventUnreadCountUpdate, EventConversationUpdate, EventError}

// fuzzTypedUsers are the user ids of the typed endpoints (selector / 5).
var fuzzTypedUsers = []string{"42", "user@example.com", "ü 😀", "a:b", strings.Repeat("u", 257)}

// FuzzTypedEventBody posts fuzzed bodies to POST
// /api/v1/users/{userId}/events/{event}, the event (and the user id) chosen
// by the fuzzed selector. Properties: no panic; 202 {"accepted":1} with one
// valid broadcast whose single argument is an object stamped by the server;
// or 400/413 with a JSON {"error"} and nothing broadcast.
func FuzzTypedEventBody(f *testing.F) {
	fn := newFuzzNode(f)
	sel := func(event string) byte {
		for i, e := range fuzzTypedEvents {
			if e == event {
				return byte(i)
			}
		}
		panic(event)
	}
	for _, s := range []struct {
		event, body string
	}{
		{EventNewMessage, `{"message":{"id":"m1","text":"hi"},"conversation":{"id":"c1"}}`},
		{EventNewMessage, `{"message":{"id":"m1","text":"hi"}}`},
		{EventNewMessage, `{"message":{"id":"m1"},"conversation":null}`},
		{EventNewMessage, `{"message":null}`},
		{EventNewMessage, `{"message":"text"}`},
		{EventNewMessage, `{"message":{},"timestamp":"2026-01-01T00:00:00.000Z"}`},
		{EventNewMessage, `{"message":{"id":"m1"},"Message":{"id":"m2"}}`},
		{EventNewMessage, `{"message":{"id":"m1"},"message":[1]}`},
		{EventMessageStatusUpdate, `{"messageId":"m1","conversationId":"c1","status":"read"}`},
		{EventMessageStatusUpdate, `{"messageId":"m1","conversationId":"c1","status":"delivered"}`},
		{EventMessageStatusUpdate, `{"messageId":"m1","conversationId":"c1","status":"READ"}`},
		{EventMessageStatusUpdate, `{"messageId":"m1","conversationId":"c1"}`},
		{EventUnreadCountUpdate, `{"unreadCounts":{"whatsapp":3,"telegram":0},"totalUnread":3}`},
		{EventUnreadCountUpdate, `{"unreadCounts":{},"totalUnread":0}`},
		{EventUnreadCountUpdate, `{"unreadCounts":{"whatsapp":-1},"totalUnread":3}`},
		{EventUnreadCountUpdate, `{"unreadCounts":{"whatsapp":9223372036854775808},"totalUnread":3}`},
		{EventUnreadCountUpdate, `{"unreadCounts":{"whatsapp":3.5},"totalUnread":1e3}`},
		{EventUnreadCountUpdate, `{"unreadCounts":null,"totalUnread":3}`},
		{EventConversationUpdate, `{"conversation":{"id":"c1","title":"Team","unread":2}}`},
		{EventConversationUpdate, `{"conversation":[]}`},
		{EventError, `{"error":"Sync failed","code":"SYNC_FAILED"}`},
		{EventError, `{"error":"Sync failed"}`},
		{EventError, `{"error":""}`},
		{EventError, `{"error":"x","code":5}`},
		// Regression: invalid UTF-8 inside a pass-through object reached
		// clients in a text frame.
		{EventNewMessage, "{\"message\":{\"id\":\"m1\",\"text\":\"\xff\xfe\"}}"},
		{EventConversationUpdate, "{\"conversation\":{\"title\":\"caf\xe9\"}}"},
	} {
		f.Add(sel(s.event), []byte(s.body))
	}
	for i, s := range fuzzHostileJSON() {
		f.Add(byte(i), []byte(s))
	}
	f.Add(byte(5*4), []byte(`{"error":"x"}`)) // a user id of 257 bytes
	// Regression: a stray closing brace after the object was accepted.
	f.Add(byte(4), []byte(`{"error":"x"}}`))

	f.Fuzz(func(t *testing.T, selector byte, body []byte) {
		event := fuzzTypedEvents[int(selector)%len(fuzzTypedEvents)]
		user := fuzzTypedUsers[int(selector)/len(fuzzTypedEvents)%len(fuzzTypedUsers)]
		fn.rec.take()
		w := fn.serve(http.MethodPost, "/api/v1/users/"+url.PathEscape(user)+"/events/"+event, body, fuzzAPIHeader)
		fn.checkNoPanic(t)
		sent := fn.rec.take()
		if fuzzCheckAPIAnswer(t, w, 1) != http.StatusAccepted {
			if len(sent) != 0 {
				t.Fatalf("answered %d %q but emitted %d event(s)", w.Code, w.Body.Bytes(), len(sent))
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		if len(sent) != 1 {
			t.Fatalf("202 but %d broadcasts", len(sent))
		}
		args := fuzzCheckFrame(t, fn.n, sent[0], user, event)
		if len(args) != 1 {
			t.Fatalf("typed event %s sent %d arguments, want 1", event, len(args))
		}
		var payload map[string]json.RawMessage
		if err := json.Unmarshal(args[0], &payload); err != nil {
			t.Fatalf("typed event %s payload %q is not an object", event, args[0])
		}
		var ts string
		if json.Unmarshal(payload["timestamp"], &ts) != nil || !timestampRE.MatchString(ts) {
			t.Fatalf("typed event %s payload %q: no server timestamp", event, args[0])
		}
	})
}

// FuzzPollingPayload opens a polling session per input (GET handshake) and
// POSTs the fuzzed payload to it. Properties: no panic; the POST answers 200
// "ok", or 400/413 with a JSON error; whatever the server queued in answer
// is valid UTF-8 text (the GET response is text/plain; charset=UTF-8) or
// base64-able binary; and once the session is closed the node holds no
// session, socket or user any more. With the mode byte's low four bits all
// set, the payload is padded beyond MAX_PAYLOAD.
func FuzzPollingPayload(f *testing.F) {
	fn := newFuzzNode(f)
	token, err := SignToken([]byte(fuzzSecret), "42", "a@b.c", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	auth := `42["authenticate",{"token":"` + token + `"}]`
	for _, s := range []string{
		// What socket.io-client sends.
		"40", `40{"token":"` + token + `"}`, "40\x1e" + auth, "40\x1e421" + auth[2:],
		"40\x1e" + auth + "\x1e42[\"typing\",{\"conversationId\":\"c1\"}]",
		"3", "6", "1", "40\x1e41", "40\x1e1\x1e40",
		"451-[\"upload\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==",
		"40\x1e451-[\"upload\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==",
		`40{"token":"expired.or.garbage"}`, `42["authenticate",{"token":"x"}]`,
		`40/admin,`, `40{"token":42}`, "40\x1e42[\"authenticate\"]",
		"40\x1e43[\"x\"]", "40\x1e430[]",
		// Hostile.
		"", "\x1e", "\x1e\x1e", "2", "2probe", "5", "0", "7", "b", "b!!!", "bAQI=\x1ebAQI",
		"4\xff\xfe", "42[\"\xff\"]", "40\x1e42[\"disconnect\"]", "40\x1e42" + strings.Repeat("[", 50_000),
		"40" + strings.Repeat("\x1e42[\"e\"]", 200), "40\x1e" + strings.Repeat(auth+"\x1e", 100) + "3",
		"42[\"e\",1e999999]", "4" + strings.Repeat("x", 10_000), "\x00\x00",
	} {
		f.Add(byte(0), []byte(s))
	}
	// Regression (fixed in 15efee2): the CONNECT_ERROR of an unknown
	// namespace echoed its invalid UTF-8 in a text frame.
	f.Add(byte(0), []byte("40/\xff\xfe,"))
	// Regression (fixed in 15efee2): padded beyond MAX_PAYLOAD, the 413
	// was text/plain rather than a JSON error.
	f.Add(byte(0x0f), []byte("40"))

	f.Fuzz(func(t *testing.T, mode byte, payload []byte) {
		n := fn.n
		w := fn.serve(http.MethodGet, "/socket.io/?EIO=4&transport=polling", nil, nil)
		if w.Code != http.StatusOK || !bytes.HasPrefix(w.Body.Bytes(), []byte("0{")) {
			t.Fatalf("handshake: %d %q", w.Code, w.Body.Bytes())
		}
		var open struct {
			SID string `json:"sid"`
		}
		if err := json.Unmarshal(w.Body.Bytes()[1:], &open); err != nil || open.SID == "" {
			t.Fatalf("open packet %q: %v", w.Body.Bytes(), err)
		}
		e := n.lookup(open.SID)
		if e == nil {
			t.Fatalf("session %s not found after its handshake", open.SID)
		}
		defer func() {
			e.close(reasonTransportClose)
			// A slow-consumer close runs on its own goroutine: give it a moment.
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				n.mu.Lock()
				done := len(n.sessions) == 0 && len(n.authed) == 0
				n.mu.Unlock()
				if done && fuzzRoomsEmpty(n.rooms) && n.open.Load() == 0 && n.users.Load() == 0 {
					return
				}
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			t.Fatalf("after the session closed: %d sessions (open %d), %d authenticated sockets, %d users", len(n.sessions), n.open.Load(), len(n.authed), n.users.Load())
		}()

		body := payload
		if mode&0x0f == 0x0f {
			body = append(bytes.Clone(payload), bytes.Repeat([]byte{'x'}, int(n.opts.MaxPayload)+1)...)
		}
		w = fn.serve(http.MethodPost, "/socket.io/?EIO=4&transport=polling&sid="+open.SID, body,
			http.Header{"Content-Type": {"text/plain;charset=UTF-8"}})
		fn.checkNoPanic(t)
		switch w.Code {
		case http.StatusOK:
			if w.Body.String() != "ok" {
				t.Fatalf("200 with body %q, want \"ok\"", w.Body.Bytes())
			}
			if int64(len(body)) > n.opts.MaxPayload {
				t.Fatalf("a POST of %d bytes above MAX_PAYLOAD was accepted", len(body))
			}
		case http.StatusBadRequest:
			fuzzCheckJSONError(t, w, "message")
		case http.StatusRequestEntityTooLarge:
			if int64(len(body)) <= n.opts.MaxPayload {
				t.Fatalf("413 for %d bytes, within MAX_PAYLOAD", len(body))
			}
			fuzzCheckJSONError(t, w, "message")
		default:
			t.Fatalf("POST: %d %q, want 200, 400 or 413", w.Code, w.Body.Bytes())
		}

		// What the next GET would carry must be sendable as UTF-8 text.
		if p, ok := e.currentTransport().(*pollingTransport); ok {
			p.mu.Lock()
			queued := append([]engineio.Packet(nil), p.queue...)
			p.mu.Unlock()
			for _, pkt := range queued {
				if !pkt.Binary && !utf8.Valid(pkt.Data) {
					t.Fatalf("server queued an invalid UTF-8 text packet %d %q", pkt.Type, pkt.Data)
				}
			}
		}
	})
}
