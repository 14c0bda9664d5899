package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/presence"
)

// --- 7. Emit path through n.Service() ---

func TestServiceEmitFrames(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	sv := tn.n.Service()
	a1 := tn.authed(t, "u1", "e@x")
	a2 := tn.authed(t, "u1", "e@x")
	other := tn.authed(t, "u2", "f@x")

	// expectBoth checks that both of u1's sockets receive the same bytes, want
	// once the timestamp is normalized.
	expectBoth := func(want string) {
		t.Helper()
		f1, f2 := a1.nextText(), a2.nextText()
		if f1 != f2 {
			t.Errorf("u1's sockets got different frames:\n%q\n%q", f1, f2)
		}
		if got := normalizeTS(t, f1); got != want {
			t.Errorf("got frame %q\nwant       %q", f1, want)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("emit: %v", err)
		}
	}

	must(sv.Emit(ctx, "u1", "custom", map[string]any{"b": "x", "a": 1}))
	expectBoth(`42["custom",{"a":1,"b":"x"}]`)
	must(sv.Emit(ctx, "u1", "no_args", nil))
	expectBoth(`42["no_args"]`)
	must(sv.Emit(ctx, "u1", "raw", json.RawMessage(`{"k": [1, 2]}`)))
	expectBoth(`42["raw",{"k":[1,2]}]`)
	must(sv.Emit(ctx, "u1", "scalar", "text"))
	expectBoth(`42["scalar","text"]`)

	msg := map[string]any{"id": "m1", "text": "hi"}
	must(sv.EmitNewMessage(ctx, "u1", msg, nil))
	expectBoth(`42["new_message",{"message":{"id":"m1","text":"hi"},"timestamp":"TS"}]`)
	must(sv.EmitNewMessage(ctx, "u1", msg, map[string]any{"id": "c1", "title": "Team"}))
	expectBoth(`42["new_message",{"message":{"id":"m1","text":"hi"},"conversation":{"id":"c1","title":"Team"},"timestamp":"TS"}]`)

	must(sv.EmitMessageStatusUpdate(ctx, "u1", "m1", StatusRead, "c1"))
	expectBoth(`42["message_status_update",{"messageId":"m1","conversationId":"c1","status":"read","timestamp":"TS"}]`)
	must(sv.EmitMessageStatusUpdate(ctx, "u1", "m2", StatusDelivered, "c1"))
	expectBoth(`42["message_status_update",{"messageId":"m2","conversationId":"c1","status":"delivered","timestamp":"TS"}]`)

	must(sv.EmitUnreadCountUpdate(ctx, "u1", map[string]int64{"web": 2, "ios": 1}, 3))
	expectBoth(`42["unread_count_update",{"unreadCounts":{"ios":1,"web":2},"totalUnread":3,"timestamp":"TS"}]`)
	must(sv.EmitUnreadCountUpdate(ctx, "u1", map[string]int64{}, 0))
	expectBoth(`42["unread_count_update",{"unreadCounts":{},"totalUnread":0,"timestamp":"TS"}]`)

	must(sv.EmitConversationUpdate(ctx, "u1", map[string]any{"id": "c1", "unread": 0}))
	expectBoth(`42["conversation_update",{"conversation":{"id":"c1","unread":0},"timestamp":"TS"}]`)

	must(sv.EmitError(ctx, "u1", "Something failed", "E_FAIL"))
	expectBoth(`42["error",{"error":"Something failed","code":"E_FAIL","timestamp":"TS"}]`)
	must(sv.EmitError(ctx, "u1", "Something failed", ""))
	expectBoth(`42["error",{"error":"Something failed","timestamp":"TS"}]`)

	// u2 received none of it: its first frame is the marker sent last.
	must(sv.Emit(ctx, "u2", "marker", 1))
	other.expect(`42["marker",1]`)
	expectNothingAll(t, a1, a2)
}

func TestServiceEmitRefusals(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	sv := tn.n.Service()
	c := tn.authed(t, "u1", "e@x")

	invalid := map[string]error{}
	for _, name := range []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"} {
		invalid["reserved "+name] = sv.Emit(ctx, "u1", name, 1)
	}
	invalid["empty event"] = sv.Emit(ctx, "u1", "", 1)
	invalid["long event"] = sv.Emit(ctx, "u1", strings.Repeat("e", 257), 1)
	invalid["empty user"] = sv.Emit(ctx, "", "x", 1)
	invalid["long user"] = sv.Emit(ctx, strings.Repeat("u", 257), "x", 1)
	invalid["unmarshalable data"] = sv.Emit(ctx, "u1", "x", make(chan int))
	invalid["invalid raw JSON"] = sv.Emit(ctx, "u1", "x", json.RawMessage(`{bad`))
	invalid["above MaxPayload"] = sv.Emit(ctx, "u1", "big", strings.Repeat("x", 1_000_000))
	invalid["new_message: message not an object"] = sv.EmitNewMessage(ctx, "u1", "text", nil)
	invalid["new_message: nil message"] = sv.EmitNewMessage(ctx, "u1", nil, nil)
	invalid["new_message: conversation not an object"] = sv.EmitNewMessage(ctx, "u1", map[string]any{"id": 1}, []int{1})
	invalid["status: invalid"] = sv.EmitMessageStatusUpdate(ctx, "u1", "m1", MessageStatus("seen"), "c1")
	invalid["status: empty"] = sv.EmitMessageStatusUpdate(ctx, "u1", "m1", "", "c1")
	invalid["status: no messageId"] = sv.EmitMessageStatusUpdate(ctx, "u1", "", StatusRead, "c1")
	invalid["status: no conversationId"] = sv.EmitMessageStatusUpdate(ctx, "u1", "m1", StatusRead, "")
	invalid["unread: nil counts"] = sv.EmitUnreadCountUpdate(ctx, "u1", nil, 0)
	invalid["unread: negative count"] = sv.EmitUnreadCountUpdate(ctx, "u1", map[string]int64{"web": -1}, 0)
	invalid["unread: negative total"] = sv.EmitUnreadCountUpdate(ctx, "u1", map[string]int64{}, -1)
	invalid["conversation: not an object"] = sv.EmitConversationUpdate(ctx, "u1", "c1")
	invalid["error: empty message"] = sv.EmitError(ctx, "u1", "", "X")
	invalid["typed: empty user"] = sv.EmitError(ctx, "", "boom", "")
	_, invalid["count: empty user"] = sv.GetUserConnectionCount(ctx, "")
	_, invalid["connected: empty user"] = sv.IsUserConnected(ctx, "")
	invalid["disconnect: empty user"] = sv.DisconnectUser(ctx, "")
	for name, err := range invalid {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want errors.Is(err, ErrInvalid)", name, err)
		}
	}
	// None of the refused emits reached the socket.
	if err := sv.Emit(ctx, "u1", "marker", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["marker",1]`)
}

func TestServiceEmitMaxPayloadBoundary(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.MaxPayload = 1024 })
	ctx := context.Background()
	c := tn.authed(t, "u1", "e@x")
	const overhead = len(`42["e",""]`)
	fits := strings.Repeat("x", 1024-overhead)
	if err := tn.n.Service().Emit(ctx, "u1", "e", fits); err != nil {
		t.Fatalf("an event of exactly MaxPayload bytes: %v", err)
	}
	c.expect(`42["e","` + fits + `"]`)
	if err := tn.n.Service().Emit(ctx, "u1", "e", fits+"x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an event one byte above MaxPayload: err = %v, want ErrInvalid", err)
	}
	c.expectNothing()
}

func TestServiceStatsAndPresence(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	sv := tn.n.Service()

	stats := func() presence.Stats {
		t.Helper()
		st, err := sv.GetStats(ctx)
		if err != nil {
			t.Fatalf("GetStats: %v", err)
		}
		return st
	}
	statsOf := func(conns, users int, avg float64) presence.Stats {
		return presence.Stats{TotalConnections: conns, AuthenticatedUsers: users, AverageConnectionsPerUser: avg,
			Nodes: []presence.NodeStats{{NodeID: testNodeID, Connections: conns, AuthenticatedUsers: users}}}
	}
	count := func(user string) int {
		t.Helper()
		n, err := sv.GetUserConnectionCount(ctx, user)
		if err != nil {
			t.Fatalf("GetUserConnectionCount(%s): %v", user, err)
		}
		return n
	}
	connected := func(user string) bool {
		t.Helper()
		ok, err := sv.IsUserConnected(ctx, user)
		if err != nil {
			t.Fatalf("IsUserConnected(%s): %v", user, err)
		}
		return ok
	}

	if got, want := stats(), statsOf(0, 0, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("empty node: stats %+v, want %+v", got, want)
	}
	a1 := tn.authed(t, "u1", "e@x")
	a2 := tn.authed(t, "u1", "e@x")
	b := tn.authed(t, "u2", "f@x")
	anon := tn.connect(t) // connected, not authenticated: not counted

	if got, want := stats(), statsOf(3, 2, 1.5); !reflect.DeepEqual(got, want) {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	if c := count("u1"); c != 2 {
		t.Errorf("GetUserConnectionCount(u1) = %d, want 2", c)
	}
	if c := count("u2"); c != 1 {
		t.Errorf("GetUserConnectionCount(u2) = %d, want 1", c)
	}
	if c := count("u3"); c != 0 {
		t.Errorf("GetUserConnectionCount(u3) = %d, want 0", c)
	}
	if !connected("u1") || !connected("u2") || connected("u3") {
		t.Errorf("IsUserConnected u1=%v u2=%v u3=%v, want true true false", connected("u1"), connected("u2"), connected("u3"))
	}
	if open, users := tn.n.open.Load(), tn.n.users.Load(); open != 4 || users != 2 {
		t.Errorf("node counters open=%d users=%d, want 4 and 2", open, users)
	}

	a2.close()
	eventually(t, "u1 to have one connection", func() bool { return count("u1") == 1 })
	if got, want := stats(), statsOf(2, 2, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("after one disconnect: stats %+v, want %+v", got, want)
	}
	a1.close()
	b.close()
	anon.close()
	eventually(t, "every connection to go", func() bool { return reflect.DeepEqual(stats(), statsOf(0, 0, 0)) })
	if connected("u1") || connected("u2") || count("u1") != 0 || count("u2") != 0 {
		t.Error("users still connected after every socket closed")
	}
	eventually(t, "the node counters to reach 0", func() bool { return tn.n.open.Load() == 0 && tn.n.users.Load() == 0 })
}

func TestServiceDisconnectUser(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx := context.Background()
	sv := tn.n.Service()
	a1 := tn.authed(t, "u1", "e@x")
	a2 := tn.authed(t, "u1", "e@x")
	b := tn.authed(t, "u2", "f@x")

	if err := sv.DisconnectUser(ctx, "u1"); err != nil {
		t.Fatalf("DisconnectUser: %v", err)
	}
	for _, c := range []*wsClient{a1, a2} {
		c.expect("41")
		c.expectClosed()
	}
	if n, _ := sv.GetUserConnectionCount(ctx, "u1"); n != 0 {
		t.Errorf("GetUserConnectionCount(u1) = %d after DisconnectUser, want 0", n)
	}
	if err := sv.DisconnectUser(ctx, "nobody"); err != nil {
		t.Errorf("DisconnectUser of a user without sockets: %v", err)
	}
	if err := sv.Emit(ctx, "u2", "marker", 1); err != nil {
		t.Fatal(err)
	}
	b.expect(`42["marker",1]`)
	if ok, _ := sv.IsUserConnected(ctx, "u2"); !ok {
		t.Error("u2 was disconnected with u1")
	}
	// u1 may come back.
	tn.authed(t, "u1", "e@x")
}

// --- 8. A frame is encoded once per node ---

func TestDeliverLocalWritesTheFrameAsIs(t *testing.T) {
	tn := newTestNode(t, nil)
	a1 := tn.authed(t, "u1", "e@x")
	a2 := tn.authed(t, "u1", "e@x")
	b := tn.authed(t, "u2", "f@x")
	anon := tn.connect(t)

	// The sentinel is valid but not canonical JSON, and Data says something
	// else: re-encoding on delivery would change the bytes.
	sentinel := []byte(`42["sentinel", {"encoded" : "once"} ]`)
	data := []json.RawMessage{json.RawMessage(`"other"`), json.RawMessage(`{"not":"this"}`)}
	before := tn.n.metrics.deliveries.Load()

	tn.n.DeliverLocal(&adapter.Message{Nsp: "/", Rooms: []string{UserRoom("u1")}, Data: data, Frame: sentinel})
	a1.expect(string(sentinel))
	a2.expect(string(sentinel))
	if d := tn.n.metrics.deliveries.Load() - before; d != 2 {
		t.Errorf("deliveries += %d, want 2", d)
	}

	// Every authenticated socket (no rooms), except one.
	tn.n.DeliverLocal(&adapter.Message{Nsp: "/", Except: []string{a2.sock}, Data: data, Frame: sentinel})
	a1.expect(string(sentinel))
	b.expect(string(sentinel))

	// Several rooms: one copy per socket.
	tn.n.DeliverLocal(&adapter.Message{Nsp: "/", Rooms: []string{UserRoom("u1"), UserRoom("u2"), UserRoom("u1")}, Data: data, Frame: sentinel})
	for _, c := range []*wsClient{a1, a2, b} {
		c.expect(string(sentinel))
	}

	// A message from another node arrives without a frame: it is encoded from Data.
	tn.n.DeliverLocal(&adapter.Message{Nsp: "/", Rooms: []string{UserRoom("u2")}, Data: []json.RawMessage{json.RawMessage(`"from_peer"`), json.RawMessage(`{"x":1}`)}})
	b.expect(`42["from_peer",{"x":1}]`)

	// Nothing else arrived anywhere; the anonymous socket got nothing at all.
	expectNothingAll(t, a1, a2, b, anon)
}

// --- 9. Slow consumers ---

func TestSlowConsumerIsCutOthersKeepReceiving(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.WriteQueue = 16 })
	ctx := context.Background()
	sv := tn.n.Service()
	fast := tn.authed(t, "fast", "fast@x")

	// The slow client authenticates, then never reads again.
	slow, _, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	read := func() string {
		t.Helper()
		_ = slow.SetReadDeadline(time.Now().Add(readTimeout))
		_, b, err := slow.ReadMessage()
		if err != nil {
			t.Fatalf("slow client: %v", err)
		}
		return string(b)
	}
	read() // open
	_ = slow.WriteMessage(websocket.TextMessage, []byte("40"))
	read() // 40{"sid":...}
	_ = slow.WriteMessage(websocket.TextMessage, []byte(`42["authenticate",{"token":"`+mustToken(t, "slow", "s@x", time.Hour)+`"}]`))
	if got := read(); got != `42["authenticated",{"userId":"slow","email":"s@x"}]` {
		t.Fatalf("slow client: %q", got)
	}

	big := json.RawMessage(`"` + strings.Repeat("x", 32<<10) + `"`)
	const events = 3000
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < events; i++ {
		t0 := time.Now()
		// 32 KiB events until the slow client is cut (a few MB fill the
		// socket buffers), small ones afterwards to keep the test fast.
		var data any = i
		if tn.n.metrics.slowConsumers.Load() == 0 {
			data = big
		}
		if err := sv.Emit(ctx, "slow", "bulk", data); err != nil {
			t.Fatalf("emit %d to the slow user: %v", i, err)
		}
		if err := sv.Emit(ctx, "fast", "tick", i); err != nil {
			t.Fatalf("emit %d to the fast user: %v", i, err)
		}
		if d := time.Since(t0); d > slowest {
			slowest = d
		}
		// The fast client keeps up: it is never more than a few events
		// behind (its queue holds 16), as a healthy client on a LAN.
		if i >= 4 {
			fast.expect(fmt.Sprintf(`42["tick",%d]`, i-4))
		}
	}
	t.Logf("%d emit pairs in %v (slowest %v), slowConsumers=%d", events, time.Since(start), slowest, tn.n.metrics.slowConsumers.Load())
	if slowest > time.Second {
		t.Errorf("an emit took %v: emits must not block on a slow client", slowest)
	}
	for i := events - 4; i < events; i++ {
		want := fmt.Sprintf(`42["tick",%d]`, i)
		if got := fast.nextText(); got != want {
			t.Fatalf("fast client: got %q, want %q", got, want)
		}
	}
	fast.expectNothing()

	if tn.n.metrics.slowConsumers.Load() == 0 {
		t.Error("no slow consumer was recorded")
	}
	eventually(t, "the slow user to be disconnected", func() bool {
		ok, _ := sv.IsUserConnected(ctx, "slow")
		return !ok
	})
	// The slow client's connection ends once it reads what was buffered.
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			continue
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the slow client's connection is still open")
		}
		break
	}
	// The fast user is still connected and served.
	if err := sv.Emit(ctx, "fast", "after", 1); err != nil {
		t.Fatal(err)
	}
	fast.expect(`42["after",1]`)
}

// --- Adapter failures ---

// flakyAdapter is the memory adapter with failures on demand.
type flakyAdapter struct {
	*adapter.Memory
	failBroadcast atomic.Bool
	failAddRoom   atomic.Bool
}

var errAdapterDown = errors.New("adapter down")

func (f *flakyAdapter) Broadcast(ctx context.Context, msg *adapter.Message) error {
	if f.failBroadcast.Load() {
		return errAdapterDown
	}
	return f.Memory.Broadcast(ctx, msg)
}

func (f *flakyAdapter) AddRoom(ctx context.Context, room string) error {
	if f.failAddRoom.Load() {
		return errAdapterDown
	}
	return f.Memory.AddRoom(ctx, room)
}

func TestAdapterBroadcastFailure(t *testing.T) {
	fa := &flakyAdapter{Memory: adapter.NewMemory()}
	tn := newTestNode(t, func(o *Options) { o.Adapter = fa })
	ctx := context.Background()
	c := tn.authed(t, "u1", "e@x")

	fa.failBroadcast.Store(true)
	err := tn.n.Service().Emit(ctx, "u1", "x", 1)
	if err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, errAdapterDown) {
		t.Errorf("Emit with the adapter down: err = %v, want the adapter's error (not ErrInvalid)", err)
	}
	if err := tn.n.Service().EmitError(ctx, "u1", "boom", ""); !errors.Is(err, errAdapterDown) {
		t.Errorf("EmitError with the adapter down: err = %v", err)
	}
	if f := tn.n.metrics.emitFailures.Load(); f != 2 {
		t.Errorf("emitFailures = %d, want 2", f)
	}
	r := tn.api(t, http.MethodPost, "/api/v1/emit", `[{"userId":"u1","event":"a"},{"userId":"u1","event":"b"}]`)
	expectJSONError(t, "emit with the adapter down", r, http.StatusServiceUnavailable)
	if !strings.Contains(r.body, `"accepted":0`) {
		t.Errorf("emit with the adapter down: body %s, want accepted 0", r.body)
	}
	r = tn.api(t, http.MethodPost, "/api/v1/users/u1/events/error", `{"error":"boom"}`)
	expectJSONError(t, "typed emit with the adapter down", r, http.StatusServiceUnavailable)
	c.expectNothing()

	fa.failBroadcast.Store(false)
	if err := tn.n.Service().Emit(ctx, "u1", "back", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["back",1]`)
}

func TestAdapterAddRoomFailure(t *testing.T) {
	fa := &flakyAdapter{Memory: adapter.NewMemory()}
	tn := newTestNode(t, func(o *Options) { o.Adapter = fa })
	ctx := context.Background()
	fa.failAddRoom.Store(true)

	// authenticate: a transient refusal, the transport closes without 41 so
	// the client reconnects.
	c := tn.connect(t)
	c.send(`421["authenticate",{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}]`)
	c.expect(`42["auth_error",{"message":"Service temporarily unavailable"}]`)
	c.expect(`431[{"ok":false,"error":"Service temporarily unavailable"}]`)
	c.expectClosed()

	// A token in CONNECT: CONNECT_ERROR.
	c = tn.dial(t, nil)
	c.send(`40{"token":"` + mustToken(t, "u1", "e@x", time.Hour) + `"}`)
	c.expect(`44{"message":"Service temporarily unavailable"}`)

	if ok, _ := tn.n.Service().IsUserConnected(ctx, "u1"); ok {
		t.Error("u1 is connected although its room could not be subscribed")
	}
	eventually(t, "no local user", func() bool { return tn.n.users.Load() == 0 })

	fa.failAddRoom.Store(false)
	c = tn.authed(t, "u1", "e@x")
	if err := tn.n.Service().Emit(ctx, "u1", "ok", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["ok",1]`)
}
