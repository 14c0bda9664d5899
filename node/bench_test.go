package node

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/node/socketio"
)

// nopTransport takes frames and drops them: the fan-out benchmarks measure
// the node's work, not a network.
type nopTransport struct{}

func (nopTransport) writeText([]byte) error   { return nil }
func (nopTransport) writeBinary([]byte) error { return nil }
func (nopTransport) close(bool)               {}
func (nopTransport) abort()                   {}
func (nopTransport) backlog() int             { return 0 }
func (nopTransport) name() string             { return "nop" }

// benchNode is a node whose user "u" has k sockets on nop transports.
func benchNode(b *testing.B, k int) *Node {
	b.Helper()
	n, err := New(Options{Auth: AuthOptions{Secret: []byte(testSecret)}})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for range k {
		e := newEngineSession(n, nopTransport{})
		s := newSocket(n, e, "/")
		s.userRoom = UserRoom("u")
		n.rooms.join(s.userRoom, s)
	}
	return n
}

var benchMessage = json.RawMessage(`{"message":{"id":"m1","conversationId":"c1","text":"a message of about a hundred bytes, as the hub sends them"},"timestamp":"2026-11-26T10:00:00.000Z"}`)

// BenchmarkDeliverLocal is the fan-out path: one encoded frame written to
// each of a user's k sockets.
func BenchmarkDeliverLocal(b *testing.B) {
	for _, k := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("sockets=%d", k), func(b *testing.B) {
			n := benchNode(b, k)
			msg := &adapter.Message{Nsp: "/", Rooms: []string{UserRoom("u")}, Data: []json.RawMessage{[]byte(`"new_message"`), benchMessage}}
			msg.Frame = encodeMessage(msg)
			b.ReportAllocs()
			for b.Loop() {
				n.DeliverLocal(msg)
			}
		})
	}
}

// BenchmarkEmit is a whole emit through the Go API on one node: validation,
// the frame encoded once, the memory adapter, delivery to 2 sockets.
func BenchmarkEmit(b *testing.B) {
	n := benchNode(b, 2)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := n.Service().Emit(ctx, "u", EventNewMessage, benchMessage); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEvent is the inbound Socket.IO decoding of an authenticate event.
func BenchmarkDecodeEvent(b *testing.B) {
	pkt := []byte(`2["authenticate",{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.abc"}]`)
	b.ReportAllocs()
	for b.Loop() {
		var d socketio.Decoder
		if _, err := d.AddText(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
