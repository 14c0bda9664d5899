package adapter

// Tests of the emitter door's recorder against a real redis-server: one
// elected node records @socket.io/redis-emitter's broadcasts and republishes
// them with offsets; the others hold the originals for that copy.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func recorderOptions() RedisOptions {
	return RedisOptions{HistoryWindow: time.Minute, HistoryMaxLen: 100, EmitterRooms: "user:",
		ProbeInterval: 100 * time.Millisecond, RelayWait: 400 * time.Millisecond}
}

// watchers is how many nodes PSUBSCRIBE: the recorder and its standby.
func (c *rtCluster) watchers() int64 { return int64(min(2, len(c.nodes))) }

// psubscribers counts the connections with a pattern subscription
// (PUBSUB NUMPAT counts distinct patterns).
func (c *rtCluster) psubscribers() int64 {
	list, _ := c.admin.ClientList(context.Background()).Result()
	var n int64
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " psub=") && !strings.Contains(line, " psub=0 ") {
			n++
		}
	}
	return n
}

// waitRecorder waits until one node records, another (if any) stands by,
// and every node knows it.
func (c *rtCluster) waitRecorder() *rtNode {
	c.t.Helper()
	var rec *rtNode
	rtUntil(c.t, 5*time.Second, "a recorder", func() bool {
		if c.psubscribers() != c.watchers() {
			return false
		}
		rec = nil
		for _, nd := range c.nodes {
			if !nd.recorderAlive.Load() {
				return false
			}
			if time.Now().UnixNano() < nd.leaseUntil.Load() {
				rec = nd
			}
		}
		return rec != nil
	})
	return rec
}

// emitterEvent is what the emitter sends for io.to(room).emit("e", i).
func emitterEvent(t testing.TB, room string, i int) []byte {
	return emitterBytes(t, rtToRooms(rtMsg("e", fmt.Sprint(i)), room))
}

// checkSequence asserts msgs are events "e" 0..n-1, each once, in order,
// and returns their offsets ("" where a message has none).
func checkSequence(t *testing.T, msgs []*Message, n int) []string {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("%d events delivered, want %d", len(msgs), n)
	}
	var offs []string
	for i, m := range msgs {
		if string(m.Data[1]) != fmt.Sprint(i) {
			t.Fatalf("event %d carries %s: %v", i, m.Data[1], rtDataStrings(m.Data))
		}
		offs = append(offs, m.Offset)
	}
	return offs
}

func TestRecorderGivesEmitterBroadcastsOffsets(t *testing.T) {
	c := newRTCluster(t, 2, recorderOptions())
	c.waitRecorder()
	b := c.nodes[1]
	b.addRoom(t, "user:1")

	// One node emit first: the offset a client would hold before a cut.
	first := recorded("user:1", -1)
	c.nodes[0].broadcast(t, first)
	b.h.waitEvent(t, "e", 1, 3*time.Second)
	mark := b.h.mark()

	const n = 20
	for i := range n {
		// The recorder's and the standby's PSUBSCRIBE and the holder's SUBSCRIBE.
		if got := c.publish(rtChannel("user:1"), emitterEvent(t, "user:1", i)); got != 3 {
			t.Fatalf("the emitter's PUBLISH reached %d subscribers, want 3", got)
		}
	}
	b.h.wait(t, 3*time.Second, "20 emitter events", func(m []*Message, _ []rtDisc) bool { return len(m)-mark.msgs >= n })
	c.fence("fence")
	msgs, _ := b.h.since(mark)
	offs := checkSequence(t, rtFilter(msgs, "e"), n)
	prev := first.Offset
	for i, off := range offs {
		if !OffsetInRoom(off, "user:1") || CompareOffsets(prev, off) != -1 {
			t.Fatalf("event %d has offset %q after %q", i, off, prev)
		}
		prev = off
	}
	// The client sees the offset as the last argument, as for node emits.
	if last := msgs[0].Data[len(msgs[0].Data)-1]; string(last) != fmt.Sprintf("%q", offs[0]) {
		t.Fatalf("offset not appended to the event: %s", last)
	}

	// History has them: a client holding the first offset recovers all 20.
	got, ok, err := b.Recover(rtCtx(t, 3*time.Second), "user:1", first.Offset)
	if err != nil || !ok {
		t.Fatalf("Recover: ok=%v err=%v", ok, err)
	}
	if rec := checkSequence(t, got, n); !slices.Equal(rec, offs) {
		t.Fatalf("recovered offsets %v, delivered %v", rec, offs)
	}
	if st := b.Stats(); st.RelayTimeouts.Load() != 0 || st.RelayHeld.Load() != n {
		t.Fatalf("held %d, timed out %d", st.RelayHeld.Load(), st.RelayTimeouts.Load())
	}
}

func TestRecorderRecordsForUsersNoNodeHolds(t *testing.T) {
	c := newRTCluster(t, 2, recorderOptions())
	rec := c.waitRecorder()
	first := recorded("user:9", -1)
	c.nodes[0].broadcast(t, first)
	// Nobody holds user:9 (offline, reconnecting): only the recorder and
	// the standby hear it.
	for i := range 3 {
		if got := c.publish(rtChannel("user:9"), emitterEvent(t, "user:9", i)); got != 2 {
			t.Fatalf("PUBLISH reached %d subscribers, want the recorder and standby alone", got)
		}
	}
	rtUntil(t, 3*time.Second, "3 recorded", func() bool { return rec.Stats().Recorded.Load() == 3 })
	got, ok, err := c.nodes[1].Recover(rtCtx(t, 3*time.Second), "user:9", first.Offset)
	if err != nil || !ok {
		t.Fatalf("Recover: ok=%v err=%v", ok, err)
	}
	checkSequence(t, got, 3)
}

func TestRecorderLeavesOtherRoomsAndNodeEmitsAlone(t *testing.T) {
	c := newRTCluster(t, 2, recorderOptions())
	rec := c.waitRecorder()
	b := c.nodes[1]
	b.addRoom(t, "room:x")
	b.addRoom(t, "user:2")
	if got := c.publish(rtChannel("room:x"), emitterEvent(t, "room:x", 0)); got != 1 {
		// Nodes SUBSCRIBE per room, so only the holder hears it, and
		// the recorder's pattern does not cover it.
		t.Fatalf("a room outside EmitterRooms reached %d subscribers, want the holder alone", got)
	}
	c.nodes[0].broadcast(t, recorded("user:2", 0))
	c.fence("fence")
	if m := b.h.events("e"); len(m) != 2 || m[0].Offset != "" || m[1].Offset == "" {
		t.Fatalf("delivered %d events", len(m))
	}
	if n := rec.Stats().Recorded.Load(); n != 0 {
		t.Fatalf("the recorder recorded %d broadcasts that were not the emitter's to a user", n)
	}
}

func TestRecorderIdenticalBroadcastsKeepTheirCount(t *testing.T) {
	c := newRTCluster(t, 3, recorderOptions())
	c.waitRecorder()
	for _, n := range c.nodes {
		n.addRoom(t, "user:3")
	}
	same := emitterEvent(t, "user:3", 7)
	for range 4 {
		c.publish(rtChannel("user:3"), same)
	}
	for _, n := range c.nodes {
		msgs := n.h.waitEvent(t, "e", 4, 3*time.Second)
		seen := map[string]bool{}
		for _, m := range msgs {
			if m.Offset == "" || seen[m.Offset] {
				t.Fatalf("%s: offsets %q", n.name, m.Offset)
			}
			seen[m.Offset] = true
		}
	}
	c.fence("fence")
	for _, n := range c.nodes {
		if got := len(n.h.events("e")); got != 4 {
			t.Fatalf("%s delivered %d copies, want 4", n.name, got)
		}
	}
}

// A recorder that holds the lease but records nothing (hung, partitioned):
// the holders deliver the originals after RelayWait, and drop the copy if
// it comes after all.
func TestRecorderSilentDeliversOriginalsAfterRelayWait(t *testing.T) {
	o := recorderOptions()
	o.ProbeInterval = 50 * time.Millisecond
	c := newRTCluster(t, 1, o)
	rec := c.waitRecorder()
	b := rec // it holds the room too
	b.addRoom(t, "user:4")
	// Take both leases away: the node stops recording within an interval,
	// while "ghost" seems alive to it.
	for _, k := range rec.leaseKeys() {
		if err := c.admin.Set(context.Background(), k, "ghost", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rtUntil(t, 2*time.Second, "the recorder to stop", func() bool {
		return c.psubscribers() == 0
	})
	payload := emitterEvent(t, "user:4", 0)
	start := time.Now()
	c.publish(rtChannel("user:4"), payload)
	msgs := b.h.waitEvent(t, "e", 1, 3*time.Second)
	if waited := time.Since(start); waited < o.RelayWait/2 {
		t.Fatalf("delivered after %s: not held for the relay", waited)
	}
	if msgs[0].Offset != "" || b.Stats().RelayTimeouts.Load() != 1 {
		t.Fatalf("offset %q, timeouts %d", msgs[0].Offset, b.Stats().RelayTimeouts.Load())
	}
	// The copy arrives late: it must not be delivered a second time.
	_, orig, err := DecodeBroadcast(payload)
	if err != nil {
		t.Fatal(err)
	}
	orig.Relay = relayHash(rtChannel("user:4"), string(payload))
	withOffset(orig, makeOffset(RoomHash("user:4"), position{ms: uint64(time.Now().UnixMilli())}))
	late, err := EncodeBroadcast("other1", orig)
	if err != nil {
		t.Fatal(err)
	}
	c.publish(rtChannel("user:4"), late)
	// And a copy of something this node never saw is delivered.
	fresh := rtToRooms(rtMsg("e", "1"), "user:4")
	fresh.Relay = "0123456789abcdef"
	withOffset(fresh, makeOffset(RoomHash("user:4"), position{ms: uint64(time.Now().UnixMilli()), seq: 1}))
	c.publish(rtChannel("user:4"), mustEncode(t, "other1", fresh))
	c.fence("fence")
	got := b.h.events("e")
	if len(got) != 2 || string(got[1].Data[1]) != "1" || b.Stats().RelayLate.Load() != 1 {
		t.Fatalf("delivered %d events, late copies dropped %d", len(got), b.Stats().RelayLate.Load())
	}

	// Once the lease is free again, the node takes it back and offsets return.
	c.admin.Del(context.Background(), rec.leaseKeys()...)
	c.waitRecorder()
	c.publish(rtChannel("user:4"), emitterEvent(t, "user:4", 2))
	msgs = b.h.waitEvent(t, "e", 3, 3*time.Second)
	if msgs[2].Offset == "" {
		t.Fatal("no offset once the recorder is back")
	}
}

// The recorder hands over, drained (Close) or killed (its leases left to
// lapse), and no emitter broadcast is lost, doubled or left without an
// offset while it does: the standby records what the recorder did not.
func TestRecorderHandoverLosesNothing(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "drain", true: "crash"}[crash], func(t *testing.T) {
			o := recorderOptions()
			// Longer than a takeover after a crash: the lease lapses after
			// 3 intervals, the standby looks every interval.
			o.RelayWait = 2 * time.Second
			c := newRTCluster(t, 3, o)
			rec := c.waitRecorder()
			var holder *rtNode
			for _, n := range c.nodes {
				if n != rec {
					holder = n
					break
				}
			}
			holder.addRoom(t, "user:5")
			first := recorded("user:5", -1)
			holder.broadcast(t, first)
			const n = 60
			for i := range n {
				if i == 20 {
					rec.crashed = crash
					if err := rec.Close(); err != nil {
						t.Fatal(err)
					}
				}
				c.publish(rtChannel("user:5"), emitterEvent(t, "user:5", i))
				time.Sleep(10 * time.Millisecond)
			}
			holder.h.wait(t, 5*time.Second, "60 events", func(m []*Message, _ []rtDisc) bool { return len(rtFilter(m, "e")) >= n+1 })
			time.Sleep(500 * time.Millisecond) // nothing more may come
			offs := checkSequence(t, holder.h.events("e")[1:], n)
			for i, off := range offs {
				if off == "" {
					t.Fatalf("event %d has no offset: offsets %q", i, offs)
				}
			}
			got, ok, err := holder.Recover(rtCtx(t, 3*time.Second), "user:5", first.Offset)
			if err != nil || !ok {
				t.Fatalf("Recover: ok=%v err=%v", ok, err)
			}
			if rec := checkSequence(t, got, n); !slices.Equal(rec, offs) {
				t.Fatalf("history %q, delivered %q", rec, offs)
			}
			if st := holder.Stats(); st.RelayTimeouts.Load()+st.RelayLate.Load() != 0 {
				t.Fatalf("timeouts %d, late %d", st.RelayTimeouts.Load(), st.RelayLate.Load())
			}
		})
	}
}

func mustEncode(t testing.TB, uid string, m *Message) []byte {
	t.Helper()
	b, err := EncodeBroadcast(uid, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRelayFlagRoundTrips(t *testing.T) {
	m := rtToRooms(rtMsg("e", `{"a":1}`), "user:1")
	m.Relay = "00ff00ff00ff00ff"
	b := mustEncode(t, "abcdef", m)
	if uid, ok := peekUID(string(b)); !ok || uid != "abcdef" || peekRelay(string(b)) != m.Relay {
		t.Fatalf("peeked uid %q %v, relay %q", uid, ok, peekRelay(string(b)))
	}
	if uid, ok := peekUID(string(emitterEvent(t, "user:1", 1))); !ok || uid != emitterUID {
		t.Fatalf("peeked the emitter's uid as %q %v", uid, ok)
	}
	for _, bad := range []string{"", "\x93", "\x93\xa6abc", "\x92\xa1a"} {
		if _, ok := peekUID(bad); ok {
			t.Fatalf("peekUID(%q) ok", bad)
		}
	}
	_, got, err := DecodeBroadcast(b)
	if err != nil || got.Relay != m.Relay || !slices.Equal(rtDataStrings(got.Data), rtDataStrings(m.Data)) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	// Without a relay, the flags stay the empty map notepack.io writes.
	plain := mustEncode(t, "abcdef", rtToRooms(rtMsg("e"), "user:1"))
	if plain[len(plain)-1] != 0x80 || peekRelay(string(plain)) != "" {
		t.Fatalf("flags encoded as %x", plain[len(plain)-1])
	}
}

// A copy that arrives once the room's last member left still takes its
// original off the held queue: a member that joins later must not get that
// original (without an offset) when the next copy arrives.
func TestRecorderCopyAfterTheRoomWasLeft(t *testing.T) {
	o := recorderOptions()
	o.RelayWait = 5 * time.Second
	c := newRTCluster(t, 1, o)
	n := c.nodes[0]
	c.waitRecorder()
	// A recorder that records nothing: this test sends the copies itself.
	for _, k := range n.leaseKeys() {
		if err := c.admin.Set(context.Background(), k, "ghost", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rtUntil(t, 2*time.Second, "the node to stop recording", func() bool { return c.psubscribers() == 0 })
	n.addRoom(t, "user:6")
	copyOf := func(payload []byte, i int) []byte {
		_, m, err := DecodeBroadcast(payload)
		if err != nil {
			t.Fatal(err)
		}
		m.Relay = relayHash(rtChannel("user:6"), string(payload))
		withOffset(m, makeOffset(RoomHash("user:6"), position{ms: uint64(time.Now().UnixMilli()), seq: uint64(i)}))
		return mustEncode(t, "other1", m)
	}
	e2 := emitterEvent(t, "user:6", 2)
	c.publish(rtChannel("user:6"), e2) // held: the member is there
	rtUntil(t, 2*time.Second, "e2 held", func() bool { return n.Stats().RelayHeld.Load() == 1 })
	n.DelRoom("user:6") // the member leaves (the channel stays subscribed a while)
	c.publish(rtChannel("user:6"), copyOf(e2, 2))
	c.fence("f1")          // the copy is handled before
	n.addRoom(t, "user:6") // a member is back
	e4 := emitterEvent(t, "user:6", 4)
	c.publish(rtChannel("user:6"), e4)
	c.publish(rtChannel("user:6"), copyOf(e4, 4))
	c.fence("fence")
	got := n.h.events("e")
	if len(got) != 1 || string(got[0].Data[1]) != "4" || got[0].Offset == "" {
		for _, m := range got {
			t.Logf("%s %q", m.Data[1], m.Offset)
		}
		t.Fatalf("delivered %d events, want only e4 with its offset", len(got))
	}
}
