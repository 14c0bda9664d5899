package adapter

// Benchmarks of the wire codec: every cross-node or emitter broadcast is
// decoded once per receiving node, and every Go or API emit encoded once.

import (
	"encoding/json"
	"testing"
)

// benchMessages are a hubbench event and a guide-shaped new_message.
var benchMessages = []struct {
	name string
	msg  *Message
}{
	{"bench", &Message{Nsp: "/", Rooms: []string{"user:u42"}, Data: []json.RawMessage{
		json.RawMessage(`"bench"`),
		json.RawMessage(`{"r":3,"s":123456,"t":1732617600123456789,"p":"` + string(make100x()) + `"}`),
	}}},
	{"new_message", &Message{Nsp: "/", Rooms: []string{"user:5b1f0c2e-8d5a-4c1b-9f0e-2a7d3c4b5e6f"}, Data: []json.RawMessage{
		json.RawMessage(`"new_message"`),
		json.RawMessage(`{"conversationId":"c-77","message":{"id":"m-9","platform":"whatsapp","content":"Hi there, is the order on its way? \u00e9\u00e8","sender":{"id":"s-1","name":"Ana"},"timestamp":"2026-11-26T13:00:00.000Z","attachments":[]},"unreadCount":3}`),
	}}},
}

func make100x() []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = 'x'
	}
	return b
}

func BenchmarkEncodeBroadcast(b *testing.B) {
	for _, c := range benchMessages {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeBroadcast("emitter", c.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeBroadcast(b *testing.B) {
	for _, c := range benchMessages {
		wire, err := EncodeBroadcast("emitter", c.msg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if _, msg, err := DecodeBroadcast(wire); err != nil || len(msg.Data) != 2 {
					b.Fatal(err)
				}
			}
		})
	}
}
