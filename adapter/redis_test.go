package adapter

// Tests of the Redis cluster adapter against real redis-server 7 processes
// (adapter/redistest): several adapters in one process, each with its own
// go-redis client to the same server, and a recording Handler per node.
// Every wait is event- or poll-based with a deadline; sleeps only let time
// pass where the assertion is that nothing changes meanwhile.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messaging-hub/hubnode/adapter/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// ---------------------------------------------------------------------------
// Recording handler

type rtDisc struct {
	Rooms, Except []string
	Close         bool
}

// rtHandler records DeliverLocal and DisconnectLocal calls. changed is closed
// and replaced on every call, so waiters block on a channel, not a sleep.
type rtHandler struct {
	mu      sync.Mutex
	msgs    []*Message
	discs   []rtDisc
	changed chan struct{}
}

func newRTHandler() *rtHandler { return &rtHandler{changed: make(chan struct{})} }

func (h *rtHandler) DeliverLocal(m *Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, m)
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *rtHandler) DisconnectLocal(rooms, except []string, closeConns bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.discs = append(h.discs, rtDisc{rooms, except, closeConns})
	close(h.changed)
	h.changed = make(chan struct{})
}

// rtMark is a position in a handler's records.
type rtMark struct{ msgs, discs int }

func (h *rtHandler) mark() rtMark {
	h.mu.Lock()
	defer h.mu.Unlock()
	return rtMark{len(h.msgs), len(h.discs)}
}

// since returns what was recorded after m.
func (h *rtHandler) since(m rtMark) ([]*Message, []rtDisc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs[m.msgs:]), slices.Clone(h.discs[m.discs:])
}

// events returns the delivered messages whose event name is ev.
func (h *rtHandler) events(ev string) []*Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return rtFilter(h.msgs, ev)
}

func rtFilter(msgs []*Message, ev string) []*Message {
	var out []*Message
	for _, m := range msgs {
		if rtEvent(m) == ev {
			out = append(out, m)
		}
	}
	return out
}

// rtEvent is the event name of m, or "" when it has none.
func rtEvent(m *Message) string {
	var s string
	if len(m.Data) == 0 || json.Unmarshal(m.Data[0], &s) != nil {
		return ""
	}
	return s
}

func (h *rtHandler) describe() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var evs []string
	for _, m := range h.msgs {
		evs = append(evs, fmt.Sprintf("%s%v", rtEvent(m), m.Rooms))
	}
	return fmt.Sprintf("messages %v, disconnects %+v", evs, h.discs)
}

// wait blocks until cond holds over the records, failing t after timeout.
func (h *rtHandler) wait(t testing.TB, timeout time.Duration, what string, cond func(msgs []*Message, discs []rtDisc) bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		h.mu.Lock()
		ok := cond(h.msgs, h.discs)
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for %s; recorded %s", timeout, what, h.describe())
		}
	}
}

// waitEvent waits until n messages of event ev were delivered and returns them.
func (h *rtHandler) waitEvent(t testing.TB, ev string, n int, timeout time.Duration) []*Message {
	t.Helper()
	h.wait(t, timeout, fmt.Sprintf("%d × %q", n, ev), func(msgs []*Message, _ []rtDisc) bool {
		return len(rtFilter(msgs, ev)) >= n
	})
	return h.events(ev)
}

// ---------------------------------------------------------------------------
// Cluster of adapters on one redis-server

type rtNode struct {
	*Redis
	name string
	h    *rtHandler
	rc   *redis.Client
}

type rtCluster struct {
	t     testing.TB
	srv   *redistest.Server
	admin *redis.Client // the test's own client: PUBSUB, INFO, raw PUBLISH
	nodes []*rtNode
}

type rtQuietLogger struct{}

func (rtQuietLogger) Printf(context.Context, string, ...any) {}

func init() {
	// go-redis logs every failed dial; the outage tests make hundreds.
	redis.SetLogger(rtQuietLogger{})
}

// newRTCluster starts a redis-server and n started adapters with options o
// (Client is set per node), and waits until all are healthy. Cleanup closes
// every adapter and client, stops the server and then checks that no
// goroutine is left.
func newRTCluster(t testing.TB, n int, o RedisOptions) *rtCluster {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		// Registered first, so it runs after every other cleanup.
		t.Cleanup(func() { rtVerifyNoLeaks(tt) })
	}
	c := &rtCluster{t: t, srv: redistest.Start(t)}
	c.admin = redis.NewClient(&redis.Options{Addr: c.srv.Addr()})
	t.Cleanup(func() { _ = c.admin.Close() })
	for i := 0; i < n; i++ {
		c.addNode(string(rune('A'+i)), o)
	}
	c.waitHealthy(5 * time.Second)
	return c
}

func (c *rtCluster) addNode(name string, o RedisOptions) *rtNode {
	c.t.Helper()
	h := newRTHandler()
	n := c.startNode(name, o, h)
	n.h = h
	return n
}

// startNode starts an adapter with its own go-redis client and handler h.
func (c *rtCluster) startNode(name string, o RedisOptions, h Handler) *rtNode {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.srv.Addr()})
	o.Client = rc
	a, err := NewRedis(o)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := a.Start(context.Background(), h); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if err := a.Close(); err != nil {
			c.t.Errorf("close %s: %v", name, err)
		}
		_ = rc.Close()
	})
	n := &rtNode{Redis: a, name: name, rc: rc}
	c.nodes = append(c.nodes, n)
	return n
}

// rtVerifyNoLeaks fails t if goroutines are left once everything is closed.
// go-redis may still be finishing a background dial probe (pool.tryDial
// sleeps 1 s between attempts and then sees the closed pool), so leaks are
// re-checked for up to 3 s before failing; nothing is ignored.
func rtVerifyNoLeaks(t *testing.T) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := goleak.Find()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left after closing every adapter and client: %v", err)
			return
		}
	}
}

// rtUntil polls cond every 5 ms until it holds, failing t after timeout. It
// is for Redis-side state, which sends no events.
func rtUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func rtCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (c *rtCluster) waitHealthy(timeout time.Duration) time.Duration {
	c.t.Helper()
	return rtUntil(c.t, timeout, "every node healthy", c.allHealthy)
}

func (c *rtCluster) allHealthy() bool {
	for _, n := range c.nodes {
		if n.healthy() != nil {
			return false
		}
	}
	return true
}

// allSubscribed reports whether NUMSUB of every room is as in want.
func (c *rtCluster) allSubscribed(want map[string]int64) bool {
	for room, n := range want {
		if c.numsub(room) != n {
			return false
		}
	}
	return true
}

func (n *rtNode) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return n.Healthy(ctx)
}

func rtChannel(room string) string { return "socket.io#/#" + room + "#" }

const rtBase, rtRequest = "socket.io#/#", "socket.io-request#/#"

// numsub is PUBSUB NUMSUB of room's channel.
func (c *rtCluster) numsub(room string) int64 {
	c.t.Helper()
	return c.numsubChannel(rtChannel(room))
}

func (c *rtCluster) numsubChannel(ch string) int64 {
	c.t.Helper()
	m, err := c.admin.PubSubNumSub(context.Background(), ch).Result()
	if err != nil {
		c.t.Fatalf("PUBSUB NUMSUB %s: %v", ch, err)
	}
	return m[ch]
}

// cmdCalls is the calls count of cmdstat_<cmd> in INFO commandstats.
func (c *rtCluster) cmdCalls(cmd string) int64 {
	c.t.Helper()
	info, err := c.admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		c.t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ",")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			c.t.Fatalf("cmdstat_%s: %q", cmd, line)
		}
		return v
	}
	return 0
}

// publish PUBLISHes raw bytes as another client (an emitter) would and
// returns how many subscribers Redis delivered them to.
func (c *rtCluster) publish(ch string, payload []byte) int64 {
	c.t.Helper()
	n, err := c.admin.Publish(context.Background(), ch, payload).Result()
	if err != nil {
		c.t.Fatalf("PUBLISH %s: %v", ch, err)
	}
	return n
}

// emitterBytes encodes msg as @socket.io/redis-emitter would (uid "emitter").
func emitterBytes(t testing.TB, msg *Message) []byte {
	t.Helper()
	b, err := EncodeBroadcast("emitter", msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fence publishes an emitter broadcast of event ev on the base channel and
// waits until every node delivered it. Redis delivers the messages of one
// connection in order, so afterwards everything published before has been
// handled by every node.
func (c *rtCluster) fence(ev string) {
	c.t.Helper()
	if got := c.publish(rtBase, emitterBytes(c.t, rtMsg(ev))); got != int64(len(c.nodes)) {
		c.t.Fatalf("fence %s reached %d subscribers, want %d", ev, got, len(c.nodes))
	}
	for _, n := range c.nodes {
		n.h.waitEvent(c.t, ev, 1, 3*time.Second)
	}
}

// rtMsg builds a broadcast of event ev with JSON arguments args.
func rtMsg(ev string, args ...string) *Message {
	d := []json.RawMessage{json.RawMessage(strconv.Quote(ev))}
	for _, a := range args {
		d = append(d, json.RawMessage(a))
	}
	return &Message{Nsp: "/", Data: d}
}

func rtToRooms(m *Message, rooms ...string) *Message { m.Rooms = rooms; return m }

func rtDataStrings(d []json.RawMessage) []string {
	out := make([]string, len(d))
	for i, r := range d {
		out[i] = string(r)
	}
	return out
}

func (n *rtNode) addRoom(t testing.TB, room string) {
	t.Helper()
	if err := n.AddRoom(rtCtx(t, 5*time.Second), room); err != nil {
		t.Fatalf("%s.AddRoom(%q): %v", n.name, room, err)
	}
}

func (n *rtNode) broadcast(t testing.TB, m *Message) {
	t.Helper()
	if err := n.Broadcast(rtCtx(t, 5*time.Second), m); err != nil {
		t.Fatalf("%s.Broadcast: %v", n.name, err)
	}
}

// ---------------------------------------------------------------------------
// 1. Room broadcasts reach exactly the holders

func TestRedisRoomBroadcastReachesOnlyHolders(t *testing.T) {
	c := newRTCluster(t, 3, RedisOptions{})
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	const room = "user:42"
	a.addRoom(t, room)
	b.addRoom(t, room)

	// One SUBSCRIBE per holding node, no pattern subscription anywhere.
	if got := c.numsub(room); got != 2 {
		t.Fatalf("NUMSUB %s = %d, want 2 (A and B hold it)", rtChannel(room), got)
	}
	if got, err := c.admin.PubSubNumPat(context.Background()).Result(); err != nil || got != 0 {
		t.Fatalf("PUBSUB NUMPAT = %d, %v; want 0: rooms must not use PSUBSCRIBE", got, err)
	}
	if got := c.numsubChannel(rtBase); got != 3 {
		t.Fatalf("NUMSUB %s = %d, want 3", rtBase, got)
	}

	sent := &Message{Nsp: "/", Rooms: []string{room}, Except: []string{"sock-1"},
		Data:  []json.RawMessage{json.RawMessage(`"new_message"`), json.RawMessage(`{"id":1,"text":"hi","nested":{"z":[1,2.5,null,true]}}`)},
		Frame: []byte(`42["new_message",{}]`)}
	a.broadcast(t, sent)
	if a.Stats().Published.Load() != 1 {
		t.Fatalf("A published %d messages, want 1", a.Stats().Published.Load())
	}

	got := b.h.waitEvent(t, "new_message", 1, 3*time.Second)[0]
	want := &Message{Nsp: "/", Rooms: []string{room}, Except: []string{"sock-1"}, Data: sent.Data}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("B received %+v %q, want %+v %q", got, rtDataStrings(got.Data), want, rtDataStrings(want.Data))
	}

	// An emitter publish on the room channel: Redis fans it out once per
	// holding node, so an emit costs one delivery per holder. It also fences
	// the room channel: A has now handled its own copy of new_message.
	if n := c.publish(rtChannel(room), emitterBytes(t, rtToRooms(rtMsg("room_fence"), room))); n != 2 {
		t.Fatalf("PUBLISH on %s reached %d subscribers, want 2", rtChannel(room), n)
	}
	a.h.waitEvent(t, "room_fence", 1, 3*time.Second)
	b.h.waitEvent(t, "room_fence", 1, 3*time.Second)
	c.fence("base_fence")

	// A: the local delivery (the very message it was given), never its own
	// copy back from Redis, although Redis did hand it over.
	if m := a.h.events("new_message"); len(m) != 1 || m[0] != sent {
		t.Fatalf("A delivered new_message %d times (want once, locally): %s", len(m), a.h.describe())
	}
	if r := a.Stats().Received.Load(); r != 3 {
		t.Fatalf("A received %d broadcasts from Redis, want 3 (its own, ignored, and two fences)", r)
	}
	if m := b.h.events("new_message"); len(m) != 1 {
		t.Fatalf("B delivered new_message %d times, want 1", len(m))
	}
	// C holds no member of the room: it is not even sent the message.
	msgs, _ := cc.h.since(rtMark{})
	if len(msgs) != 1 || rtEvent(msgs[0]) != "base_fence" {
		t.Fatalf("C delivered %s, want only base_fence", cc.h.describe())
	}
	if r := cc.Stats().Received.Load(); r != 1 {
		t.Fatalf("C received %d broadcasts from Redis, want 1 (the base fence)", r)
	}
	for _, n := range c.nodes {
		if d := n.Stats().Dropped.Load(); d != 0 {
			t.Errorf("%s dropped %d messages", n.name, d)
		}
	}
}

// ---------------------------------------------------------------------------
// 2. AddRoom returns once the subscription is live

func TestRedisAddRoomReturnsWhenSubscribed(t *testing.T) {
	c := newRTCluster(t, 2, RedisOptions{})
	a, b := c.nodes[0], c.nodes[1]
	for i := 0; i < 50; i++ {
		room := fmt.Sprintf("fresh:%d", i)
		b.addRoom(t, room)
		if got := c.numsub(room); got != 1 {
			t.Fatalf("round %d: NUMSUB %s = %d right after AddRoom returned, want 1", i, rtChannel(room), got)
		}
		a.broadcast(t, rtToRooms(rtMsg("fresh", strconv.Itoa(i)), room))
		b.h.wait(t, 2*time.Second, fmt.Sprintf("fresh #%d on B", i), func(msgs []*Message, _ []rtDisc) bool {
			m := rtFilter(msgs, "fresh")
			return len(m) == i+1 && string(m[i].Data[1]) == strconv.Itoa(i)
		})
	}
	if n := len(a.h.events("fresh")); n != 50 {
		t.Fatalf("A delivered %d fresh messages locally, want 50", n)
	}
}

// ---------------------------------------------------------------------------
// 3. DelRoom defers the UNSUBSCRIBE

func TestRedisDelRoomDeferred(t *testing.T) {
	const delay = 300 * time.Millisecond
	c := newRTCluster(t, 2, RedisOptions{UnsubscribeDelay: delay})
	a, b := c.nodes[0], c.nodes[1]

	t.Run("unsubscribes after the delay", func(t *testing.T) {
		const room = "leaving"
		b.addRoom(t, room)
		unsubs := c.cmdCalls("unsubscribe")
		start := time.Now()
		b.DelRoom(room)
		if got := c.numsub(room); got != 1 {
			t.Fatalf("NUMSUB = %d just after DelRoom, want 1", got)
		}
		// Still subscribed, but a message for the room left is not delivered.
		recv := b.Stats().Received.Load()
		a.broadcast(t, rtToRooms(rtMsg("late"), room))
		rtUntil(t, 2*time.Second, "B to receive the late message", func() bool { return b.Stats().Received.Load() > recv })
		if m := b.h.events("late"); len(m) != 0 {
			t.Fatalf("B delivered a message for a room it left: %s", b.h.describe())
		}
		rtUntil(t, 3*time.Second, "NUMSUB to drop to 0", func() bool { return c.numsub(room) == 0 })
		elapsed := time.Since(start)
		t.Logf("UNSUBSCRIBE observed %s after DelRoom (delay %s)", elapsed.Round(time.Millisecond), delay)
		if elapsed < delay {
			t.Fatalf("unsubscribed after %s, before the %s delay", elapsed, delay)
		}
		if got := c.cmdCalls("unsubscribe") - unsubs; got != 1 {
			t.Fatalf("%d UNSUBSCRIBE commands, want 1", got)
		}
	})

	t.Run("AddRoom within the delay cancels it", func(t *testing.T) {
		const room = "flapping"
		b.addRoom(t, room)
		subs, unsubs := c.cmdCalls("subscribe"), c.cmdCalls("unsubscribe")
		b.DelRoom(room)
		time.Sleep(delay / 2) // a member comes back halfway through the delay
		start := time.Now()
		b.addRoom(t, room)
		t.Logf("AddRoom within the delay returned in %s", time.Since(start).Round(time.Microsecond))
		time.Sleep(2 * delay) // past the cancelled unsubscribe
		if got := c.numsub(room); got != 1 {
			t.Fatalf("NUMSUB = %d after the cancelled unsubscribe, want 1", got)
		}
		if s, u := c.cmdCalls("subscribe")-subs, c.cmdCalls("unsubscribe")-unsubs; s != 0 || u != 0 {
			t.Fatalf("%d SUBSCRIBE and %d UNSUBSCRIBE sent, want none", s, u)
		}
		a.broadcast(t, rtToRooms(rtMsg("still_here"), room))
		b.h.waitEvent(t, "still_here", 1, 2*time.Second)
	})
}

// ---------------------------------------------------------------------------
// 4. Subscribes are batched

func TestRedisAddRoomBatchesSubscribes(t *testing.T) {
	c := newRTCluster(t, 1, RedisOptions{UnsubscribeDelay: 50 * time.Millisecond})
	n := c.nodes[0]
	const rooms = 2000
	subs := c.cmdCalls("subscribe")
	ctx := rtCtx(t, 20*time.Second)
	errs := make(chan error, rooms)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < rooms; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- n.AddRoom(ctx, fmt.Sprintf("batch:%d", i))
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("AddRoom: %v", err)
		}
	}
	got := c.cmdCalls("subscribe") - subs
	t.Logf("%d concurrent AddRoom calls: %d SUBSCRIBE commands, %s", rooms, got, took.Round(time.Millisecond))
	if got >= 200 {
		t.Errorf("%d SUBSCRIBE commands for %d concurrent AddRoom calls, want < 200: runSubscriber sends "+
			"whatever is queued the moment it wakes (a non-blocking drain), so while it keeps pace with "+
			"the callers each SUBSCRIBE carries only a few channels", got, rooms)
	}
	chans, err := c.admin.PubSubChannels(context.Background(), rtBase+"batch:*").Result()
	if err != nil || len(chans) != rooms {
		t.Fatalf("%d batch channels subscribed (%v), want %d", len(chans), err, rooms)
	}

	unsubs := c.cmdCalls("unsubscribe")
	for i := 0; i < rooms; i++ {
		n.DelRoom(fmt.Sprintf("batch:%d", i))
	}
	rtUntil(t, 5*time.Second, "every batch channel unsubscribed", func() bool {
		chans, err := c.admin.PubSubChannels(context.Background(), rtBase+"batch:*").Result()
		return err == nil && len(chans) == 0
	})
	gotU := c.cmdCalls("unsubscribe") - unsubs
	t.Logf("%d DelRoom calls: %d UNSUBSCRIBE commands", rooms, gotU)
	if gotU >= 200 {
		t.Fatalf("%d UNSUBSCRIBE commands for %d rooms, want < 200", gotU, rooms)
	}
}

// ---------------------------------------------------------------------------
// 5. Base-channel broadcasts and the official emitter's bytes

func TestRedisBaseChannelBroadcastReachesEveryNode(t *testing.T) {
	c := newRTCluster(t, 3, RedisOptions{})
	a := c.nodes[0]
	for _, tc := range []struct {
		ev    string
		rooms []string
	}{{"to_all", nil}, {"two_rooms", []string{"x", "y"}}} {
		sent := rtToRooms(rtMsg(tc.ev, `{"k":"v"}`, `[1,"two"]`), tc.rooms...)
		a.broadcast(t, sent)
		for _, n := range c.nodes[1:] {
			got := n.h.waitEvent(t, tc.ev, 1, 3*time.Second)[0]
			want := &Message{Nsp: "/", Rooms: tc.rooms, Data: sent.Data}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s on %s: got %+v %q", tc.ev, n.name, got, rtDataStrings(got.Data))
			}
		}
	}
	c.fence("fence")
	for _, n := range c.nodes {
		for _, ev := range []string{"to_all", "two_rooms"} {
			if got := len(n.h.events(ev)); got != 1 {
				t.Errorf("%s delivered %s %d times, want 1", n.name, ev, got)
			}
		}
	}
}

func rtReadTestdata(name string) ([]byte, error) { return os.ReadFile("testdata/" + name) }

func rtNilIfEmpty(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}

type rtFixture struct {
	Call    string          `json:"call"`
	Channel string          `json:"channel"`
	Hex     string          `json:"hex"`
	Expect  json.RawMessage `json:"expect"`
}

func TestRedisEmitterFixtures(t *testing.T) {
	var fixtures []rtFixture
	raw, err := rtReadTestdata("emitter-fixtures.json")
	if err == nil {
		err = json.Unmarshal(raw, &fixtures)
	}
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("testdata/emitter-fixtures.json: %v (%d fixtures)", err, len(fixtures))
	}

	c := newRTCluster(t, 3, RedisOptions{})
	holders := map[string][]*rtNode{"user:42": {c.nodes[0], c.nodes[1]}, "user:7": {c.nodes[1]}}
	for room, ns := range holders {
		for _, n := range ns {
			n.addRoom(t, room)
		}
	}
	var delivered, disconnects int
	for i, f := range fixtures {
		payload, err := hex.DecodeString(f.Hex)
		if err != nil {
			t.Fatal(err)
		}
		marks := make([]rtMark, len(c.nodes))
		for j, n := range c.nodes {
			marks[j] = n.h.mark()
		}
		reached := c.publish(f.Channel, payload)
		fence := fmt.Sprintf("fixture_fence_%d", i)
		c.fence(fence)

		// What each node should have done with the fixture.
		var wantMsg *Message
		var wantDisc *rtDisc
		receivers := map[*rtNode]bool{}
		switch {
		case payload[0] == '{': // a request, to every node
			for _, n := range c.nodes {
				receivers[n] = true
			}
			var req struct {
				Type int `json:"type"`
				Opts struct {
					Rooms, Except []string
				} `json:"opts"`
				Close bool `json:"close"`
			}
			if err := json.Unmarshal(f.Expect, &req); err != nil {
				t.Fatal(err)
			}
			if req.Type == int(RequestRemoteDisconnect) {
				wantDisc = &rtDisc{rtNilIfEmpty(req.Opts.Rooms), rtNilIfEmpty(req.Opts.Except), req.Close}
			}
		default:
			var js struct {
				Nsp                              string
				Rooms, Except, Data, Attachments []string
			}
			if err := json.Unmarshal(f.Expect, &js); err != nil {
				t.Fatal(err)
			}
			wantMsg = &Message{Nsp: js.Nsp, Rooms: rtNilIfEmpty(js.Rooms), Except: rtNilIfEmpty(js.Except)}
			for _, d := range js.Data {
				wantMsg.Data = append(wantMsg.Data, json.RawMessage(d))
			}
			for _, a := range js.Attachments {
				b, _ := hex.DecodeString(a)
				wantMsg.Attachments = append(wantMsg.Attachments, b)
			}
			if f.Channel == rtBase {
				for _, n := range c.nodes {
					receivers[n] = true
				}
			} else if r, ok := strings.CutPrefix(f.Channel, rtBase); ok {
				for _, n := range holders[strings.TrimSuffix(r, "#")] {
					receivers[n] = true
				}
			}
			if js.Nsp != "/" {
				wantMsg = nil // another namespace: hubnode serves "/" only
			}
		}
		if reached != int64(len(receivers)) {
			t.Errorf("%s: PUBLISH %s reached %d nodes, want %d", f.Call, f.Channel, reached, len(receivers))
		}
		for j, n := range c.nodes {
			msgs, discs := n.h.since(marks[j])
			msgs = msgs[:len(msgs)-1] // the fence
			switch {
			case wantMsg != nil && receivers[n]:
				delivered++
				if len(msgs) != 1 || !reflect.DeepEqual(msgs[0], wantMsg) {
					var got []string
					for _, m := range msgs {
						got = append(got, fmt.Sprintf("%+v %q", m, rtDataStrings(m.Data)))
					}
					t.Errorf("%s on %s: delivered %v\nwant %+v %q", f.Call, n.name, got, wantMsg, rtDataStrings(wantMsg.Data))
				}
			case len(msgs) != 0:
				t.Errorf("%s: %s delivered %d messages, want none", f.Call, n.name, len(msgs))
			}
			switch {
			case wantDisc != nil:
				disconnects++
				if len(discs) != 1 || !reflect.DeepEqual(discs[0], *wantDisc) {
					t.Errorf("%s on %s: DisconnectLocal calls %+v, want one %+v", f.Call, n.name, discs, *wantDisc)
				}
			case len(discs) != 0:
				t.Errorf("%s: %s disconnected %+v, want nothing", f.Call, n.name, discs)
			}
		}
	}
	t.Logf("%d fixtures: %d deliveries and %d disconnects checked", len(fixtures), delivered, disconnects)
	if delivered == 0 || disconnects == 0 {
		t.Fatal("fixtures exercised no delivery or no disconnect")
	}
	for _, n := range c.nodes {
		if d := n.Stats().Dropped.Load(); d != 0 {
			t.Errorf("%s dropped %d emitter messages", n.name, d)
		}
	}
	// The disconnectSockets(true) fixture, spelt out.
	for _, n := range c.nodes {
		var found bool
		_, discs := n.h.since(rtMark{})
		for _, d := range discs {
			found = found || reflect.DeepEqual(d, rtDisc{[]string{"user:42"}, nil, true})
		}
		if !found {
			t.Errorf(`%s: no DisconnectLocal(["user:42"], nil, true): %s`, n.name, n.h.describe())
		}
	}
}

// ---------------------------------------------------------------------------
// 6. DisconnectSockets

func TestRedisDisconnectSockets(t *testing.T) {
	c := newRTCluster(t, 3, RedisOptions{})
	a := c.nodes[0]
	for i, tc := range []rtDisc{{[]string{"user:9"}, nil, true}, {[]string{"user:1", "user:2"}, nil, false}} {
		marks := make([]rtMark, len(c.nodes))
		for j, n := range c.nodes {
			marks[j] = n.h.mark()
		}
		if err := a.DisconnectSockets(rtCtx(t, 5*time.Second), tc.Rooms, tc.Close); err != nil {
			t.Fatal(err)
		}
		// A acts locally, synchronously.
		if _, discs := a.h.since(marks[0]); len(discs) != 1 || !reflect.DeepEqual(discs[0], tc) {
			t.Fatalf("A: DisconnectLocal calls %+v right after DisconnectSockets, want %+v", discs, tc)
		}
		for j, n := range c.nodes[1:] {
			n.h.wait(t, 3*time.Second, "remote disconnect on "+n.name, func(_ []*Message, d []rtDisc) bool {
				return len(d) > marks[j+1].discs
			})
		}
		// Fence the request channel, then nobody got it twice.
		fence := rtDisc{[]string{fmt.Sprintf("fence:%d", i)}, nil, false}
		c.publish(rtRequest, EncodeDisconnectRequest("emitter", fence.Rooms, nil, false))
		for j, n := range c.nodes {
			n.h.wait(t, 3*time.Second, "request fence on "+n.name, func(_ []*Message, d []rtDisc) bool {
				return len(d) >= marks[j].discs+2
			})
			_, discs := n.h.since(marks[j])
			if want := []rtDisc{tc, fence}; !reflect.DeepEqual(discs, want) {
				t.Fatalf("%s: DisconnectLocal calls %+v, want %+v", n.name, discs, want)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// 7. Redis outage

func TestRedisOutageAndRecovery(t *testing.T) {
	c := newRTCluster(t, 3, RedisOptions{})
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	held := map[string]int64{"shared": 2, "only:a": 1, "only:b": 1, "only:c": 1, "during": 1}
	a.addRoom(t, "shared")
	b.addRoom(t, "shared")
	a.addRoom(t, "only:a")
	b.addRoom(t, "only:b")
	cc.addRoom(t, "only:c")
	a.broadcast(t, rtToRooms(rtMsg("before"), "only:b"))
	b.h.waitEvent(t, "before", 1, 2*time.Second)

	up := c.srv.Down()
	down := time.Now()
	// Every node's Healthy turns into an error; each call gets a generous
	// deadline, so this measures the adapter and go-redis, not the caller.
	detected := make([]time.Duration, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(down) < 5*time.Second {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := n.Healthy(ctx)
				cancel()
				if err != nil {
					detected[i] = time.Since(down)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	t.Logf("outage reported by Healthy after %v", detected)
	for i, d := range detected {
		if d == 0 || d > 3500*time.Millisecond {
			t.Fatalf("%s: Healthy reported the outage after %s, want within ~3 s", c.nodes[i].name, d)
		}
	}

	mark := a.h.mark()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := a.Broadcast(ctx, rtToRooms(rtMsg("during_outage"), "shared"))
	cancel()
	if err == nil {
		t.Fatal("Broadcast during the outage returned nil")
	}
	t.Logf("Broadcast during the outage: %v", err)
	if msgs, _ := a.h.since(mark); len(msgs) != 1 || rtEvent(msgs[0]) != "during_outage" {
		t.Fatalf("Broadcast during the outage did not deliver locally: %s", a.h.describe())
	}
	if a.Stats().PublishErrors.Load() == 0 {
		t.Fatal("PublishErrors not counted")
	}
	// A member joins during the outage: AddRoom waits for the reconnect.
	addDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addDone <- b.AddRoom(ctx, "during")
	}()

	outage := time.Since(down)
	up()
	upAt := time.Now()
	var healthyAfter, subscribedAfter time.Duration
	rtUntil(t, 2*time.Second, "every node healthy and every wanted room resubscribed", func() bool {
		if healthyAfter == 0 && c.allHealthy() {
			healthyAfter = time.Since(upAt)
		}
		if subscribedAfter == 0 && c.allSubscribed(held) {
			subscribedAfter = time.Since(upAt)
		}
		return healthyAfter > 0 && subscribedAfter > 0
	})
	select {
	case err := <-addDone:
		if err != nil {
			t.Fatalf("AddRoom during the outage: %v", err)
		}
	case <-time.After(2*time.Second - time.Since(upAt)):
		t.Fatal("AddRoom called during the outage did not return within 2 s of Redis coming back")
	}
	a.broadcast(t, rtToRooms(rtMsg("after_b"), "only:b"))
	cc.broadcast(t, rtToRooms(rtMsg("after_shared"), "shared"))
	cc.broadcast(t, rtToRooms(rtMsg("after_during"), "during"))
	b.h.waitEvent(t, "after_b", 1, 2*time.Second)
	a.h.waitEvent(t, "after_shared", 1, 2*time.Second)
	b.h.waitEvent(t, "after_shared", 1, 2*time.Second)
	b.h.waitEvent(t, "after_during", 1, 2*time.Second)
	recovered := time.Since(upAt)
	t.Logf("outage lasted %s; after Redis came back: healthy in %s, every room resubscribed in %s, cross-node delivery in %s",
		outage.Round(time.Millisecond), healthyAfter.Round(time.Millisecond),
		subscribedAfter.Round(time.Millisecond), recovered.Round(time.Millisecond))
	if recovered > 2*time.Second {
		t.Fatalf("recovery took %s, want < 2 s", recovered)
	}
	for _, n := range c.nodes {
		if n.Stats().Reconnects.Load() == 0 {
			t.Errorf("%s counted no reconnect", n.name)
		}
	}
}

// ---------------------------------------------------------------------------
// 8. Pub/sub connections killed while Redis stays up

func TestRedisPubSubConnectionsKilled(t *testing.T) {
	c := newRTCluster(t, 3, RedisOptions{})
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	b.addRoom(t, "killed:b")
	cc.addRoom(t, "killed:c")
	a.broadcast(t, rtToRooms(rtMsg("before"), "killed:b"))
	b.h.waitEvent(t, "before", 1, 2*time.Second)

	killed, err := c.admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Int()
	if err != nil || killed != 3 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v; want the 3 adapters' connections", killed, err)
	}
	at := time.Now()
	rtUntil(t, 2*time.Second, "resubscribed", func() bool {
		return c.numsub("killed:b") == 1 && c.numsub("killed:c") == 1 && c.numsubChannel(rtRequest) == 3
	})
	resub := time.Since(at)
	a.broadcast(t, rtToRooms(rtMsg("after"), "killed:b"))
	a.broadcast(t, rtToRooms(rtMsg("after"), "killed:c"))
	b.h.waitEvent(t, "after", 1, 2*time.Second)
	cc.h.waitEvent(t, "after", 1, 2*time.Second)
	c.waitHealthy(2 * time.Second)
	took := time.Since(at)
	t.Logf("after CLIENT KILL TYPE pubsub: resubscribed in %s, delivering and healthy in %s",
		resub.Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("delivery resumed after %s, want < 2 s", took)
	}
	for _, n := range c.nodes {
		if got := n.Stats().Reconnects.Load(); got != 1 {
			t.Errorf("%s counted %d reconnects, want 1", n.name, got)
		}
	}
}

// A connection dropped after a long healthy session is redialled with the
// initial 50 ms backoff, not with the backoff left over from earlier drops.
func TestRedisReconnectBackoffResetsAfterHealthySession(t *testing.T) {
	c := newRTCluster(t, 1, RedisOptions{})
	n := c.nodes[0]
	n.addRoom(t, "steady")
	var took []time.Duration
	for i := 0; i < 5; i++ {
		time.Sleep(200 * time.Millisecond) // a healthy session of some length
		reconnects := n.Stats().Reconnects.Load()
		if killed, err := c.admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Int(); err != nil || killed != 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", killed, err)
		}
		took = append(took, rtUntil(t, 3*time.Second, "resubscribed", func() bool {
			return n.Stats().Reconnects.Load() > reconnects && c.numsub("steady") == 1
		}))
	}
	t.Logf("resubscribed after successive drops in %v", took)
	for i, d := range took {
		if d > 300*time.Millisecond {
			t.Errorf("drop #%d after a healthy session: resubscribed after %s, want < 300 ms "+
				"(runPubSub never resets its backoff: session() always returns an error)", i+1, d.Round(time.Millisecond))
		}
	}
}

// A pub/sub link that delivers nothing while PING still works (here: Redis
// holds every PUBLISH, the probe included, under CLIENT PAUSE WRITE) makes
// Healthy fail within a few probe intervals; it recovers when Redis does.
func TestRedisHealthyDetectsSilentPubSub(t *testing.T) {
	const probe = 100 * time.Millisecond
	c := newRTCluster(t, 1, RedisOptions{ProbeInterval: probe})
	n := c.nodes[0]
	if err := c.admin.Do(context.Background(), "CLIENT", "PAUSE", "1500", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	var silent error
	rtUntil(t, 1200*time.Millisecond, "Healthy to report a silent pub/sub link", func() bool {
		silent = n.healthy()
		return silent != nil
	})
	t.Logf("Healthy during CLIENT PAUSE WRITE, after %s: %v", time.Since(paused).Round(time.Millisecond), silent)
	if err := c.admin.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING during the pause: %v", err)
	}
	if !strings.Contains(silent.Error(), "silent") && !errors.Is(silent, ErrNotConnected) {
		t.Fatalf("Healthy = %v, want a silent or not-connected pub/sub error", silent)
	}
	if err := c.admin.Do(context.Background(), "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	c.waitHealthy(2 * time.Second)
	c.fence("after_pause")
}

// ---------------------------------------------------------------------------
// 9. Undecodable messages are dropped

func TestRedisDropsUndecodableMessages(t *testing.T) {
	c := newRTCluster(t, 2, RedisOptions{})
	a, b := c.nodes[0], c.nodes[1]
	const room = "noisy"
	a.addRoom(t, room)
	b.addRoom(t, room)

	valid := emitterBytes(t, rtToRooms(rtMsg("ev", `1`), room))
	otherNsp := emitterBytes(t, &Message{Nsp: "/chat", Data: rtMsg("other_nsp").Data})
	ack, _ := hex.DecodeString( // {type:2, data:["ev"], nsp:"/", id:7}: acks are not supported
		"93a7656d6974746572 84a47479706502a46461746191a26576a36e7370a12fa2696407 80")
	garbage := []struct {
		channel string
		payload []byte
	}{
		{rtBase, []byte("not msgpack at all")},
		{rtBase, []byte{0x93, 0x01, 0x02, 0x03}},   // [1,2,3]
		{rtBase, valid[:len(valid)-3]},             // truncated
		{rtBase, append(slices.Clone(valid), 0)},   // trailing byte
		{rtBase, ack},                              // ack broadcast
		{rtChannel(room), []byte{0xc1}},            // never-used msgpack code
		{rtChannel(room), []byte("\x93\xa1u\x80")}, // short array
		{rtChannel(room), []byte{}},                // empty
		{rtRequest, []byte("{not json")},           // bad JSON request
		{rtRequest, []byte(`{"uid":"x"}`)},         // no type
		{rtRequest, valid},                         // msgpack request (broadcast with ack)
	}
	for _, g := range garbage {
		if n := c.publish(g.channel, g.payload); n != 2 {
			t.Fatalf("PUBLISH %q on %s reached %d nodes, want 2", g.payload, g.channel, n)
		}
	}
	// Valid but for another namespace: ignored, not dropped.
	c.publish(rtBase, otherNsp)

	a.broadcast(t, rtToRooms(rtMsg("after_garbage", `"ok"`), room))
	b.h.waitEvent(t, "after_garbage", 1, 2*time.Second)
	c.fence("fence")
	for _, n := range c.nodes {
		if got, want := n.Stats().Dropped.Load(), int64(len(garbage)); got != want {
			t.Errorf("%s dropped %d messages, want %d", n.name, got, want)
		}
		if msgs, discs := n.h.since(rtMark{}); len(discs) != 0 || len(msgs) != 2 {
			t.Errorf("%s: %s; want only after_garbage and the fence", n.name, n.h.describe())
		}
		if n.Stats().Reconnects.Load() != 0 || n.healthy() != nil {
			t.Errorf("%s: garbage disturbed the connection (%d reconnects, healthy: %v)",
				n.name, n.Stats().Reconnects.Load(), n.healthy())
		}
	}
}

// ---------------------------------------------------------------------------
// Races around the deferred unsubscribe

// A member rejoining exactly when the deferred UNSUBSCRIBE fires must keep
// the room subscribed: once the last AddRoom returned, the room is wanted,
// so Redis must deliver it. The interleaving is timing-dependent: rounds of
// 100 rooms churn until a room is lost or 5 s have passed.
func TestRedisReAddRacingDeferredUnsubscribe(t *testing.T) {
	const delay = time.Millisecond
	c := newRTCluster(t, 2, RedisOptions{UnsubscribeDelay: delay})
	a, b := c.nodes[0], c.nodes[1]
	const rooms = 100
	ctx := rtCtx(t, 20*time.Second)
	// Contention on the adapter's mutex puts it in starvation mode, where
	// Unlock hands the lock straight to a waiter: that widens the window.
	stop := make(chan struct{})
	var hammers sync.WaitGroup
	for i := 0; i < 4; i++ {
		hammers.Add(1)
		go func() {
			defer hammers.Done()
			for {
				select {
				case <-stop:
					return
				default:
					b.DelRoom("never-added")
				}
			}
		}()
	}
	stopHammers := sync.OnceFunc(func() { close(stop); hammers.Wait() })
	defer stopHammers()

	var lost []string
	round, start := 0, time.Now()
	for ; len(lost) == 0 && time.Since(start) < 5*time.Second; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, rooms)
		chans := make([]string, rooms)
		for i := range rooms {
			room := fmt.Sprintf("churn:%d:%d", round, i)
			chans[i] = rtChannel(room)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.AddRoom(ctx, room); err != nil {
					errs <- err
					return
				}
				b.DelRoom(room)
				// Rejoin around the moment the unsubscribe timer fires.
				time.Sleep(delay/2 + time.Duration(i%20)*delay/10)
				errs <- b.AddRoom(ctx, room)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Every room of the round is wanted now. Let a stray UNSUBSCRIBE land.
		time.Sleep(20 * time.Millisecond)
		subs, err := c.admin.PubSubNumSub(ctx, chans...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chans {
			if subs[ch] != 1 {
				lost = append(lost, ch)
			}
		}
	}
	stopHammers()
	t.Logf("%d rounds of %d rooms in %s", round, rooms, time.Since(start).Round(time.Millisecond))
	if len(lost) == 0 {
		return
	}
	// The room stays lost: B believes it is subscribed, so AddRoom returns
	// at once, and a broadcast to it never arrives.
	room := strings.TrimSuffix(strings.TrimPrefix(lost[0], rtBase), "#")
	b.addRoom(t, room)
	a.broadcast(t, rtToRooms(rtMsg("to_lost"), room))
	c.fence("fence")
	t.Errorf("%d room(s) re-added while their deferred UNSUBSCRIBE fired are wanted by B but not subscribed "+
		"in Redis (e.g. %q: NUMSUB %d; after another AddRoom a broadcast to it reached B %d times). "+
		"DelRoom's timer callback deletes the room and unlocks r.mu before enqueueing its UNSUBSCRIBE; "+
		"an AddRoom in between enqueues its SUBSCRIBE first, which is sent and confirmed, and the "+
		"stale UNSUBSCRIBE then undoes it", len(lost), room, c.numsub(room), len(b.h.events("to_lost")))
}

// ---------------------------------------------------------------------------
// Misc API behaviour

func TestRedisNewAndClose(t *testing.T) {
	if _, err := NewRedis(RedisOptions{}); err == nil {
		t.Fatal("NewRedis without a Client succeeded")
	}
	c := newRTCluster(t, 0, RedisOptions{})
	rc := redis.NewClient(&redis.Options{Addr: c.srv.Addr()})
	defer rc.Close()
	r, err := NewRedis(RedisOptions{Client: rc})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.UID()) != 6 {
		t.Fatalf("UID %q, want 6 characters", r.UID())
	}
	if err := r.Close(); err != nil { // never started
		t.Fatal(err)
	}
	h := newRTHandler()
	if err := r.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	rtUntil(t, 5*time.Second, "healthy", func() bool { return r.Healthy(context.Background()) == nil })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil { // twice
		t.Fatal(err)
	}
	// Close dropped the pub/sub connection (Redis notices asynchronously).
	rtUntil(t, 2*time.Second, "NUMSUB of the base channel to drop to 0 after Close", func() bool {
		return c.numsubChannel(rtBase) == 0
	})
}
