// Package adapter moves emits and control messages between hubnode nodes.
//
// A node hands every emit to its Adapter, which delivers it to the node's own
// sockets and, in cluster mode, to every other node holding a member of the
// target rooms. The memory adapter serves a single node; the Redis adapter
// speaks the @socket.io/redis-adapter wire format so official emitters and
// Node.js peers interoperate. Adapters never import the node package: they
// call back into it through Handler.
package adapter

import (
	"context"
	"encoding/json"
)

// Message is one broadcast: the Socket.IO event Data (its name first, then
// its arguments) for the sockets in Rooms, minus those in Except. Empty
// Rooms means every socket.
type Message struct {
	Nsp    string
	Rooms  []string
	Except []string
	// Data is the event array: Data[0] is the name, the rest are arguments
	// as raw JSON.
	Data []json.RawMessage
	// Attachments are the binary values of Data, which holds a
	// {"_placeholder":true,"num":i} object in place of Attachments[i].
	Attachments [][]byte
	// Frame optionally carries the Engine.IO text frame already encoded by
	// the node that built the message, so local delivery encodes nothing again.
	Frame []byte
	// Record asks an adapter that keeps history to store this single-room
	// broadcast and give it an Offset, appended to Data as its last element.
	Record bool
	// Offset is the message's position in its room's history, if it has one.
	Offset string
	// Relay marks a broadcast that the cluster's recorder republished, with
	// an offset, for one that @socket.io/redis-emitter published without
	// one: it is the original's relayHash, so nodes can match the two.
	Relay string
}

// History is implemented by adapters that keep recent single-room
// broadcasts, so that a reconnecting client can recover what it missed.
type History interface {
	// Recoverable reports whether every message after offset is still kept.
	Recoverable(ctx context.Context, offset string) bool
	// Recover returns the messages of room after offset, in order; ok is
	// false when offset is not room's or is no longer kept.
	Recover(ctx context.Context, room, offset string) (msgs []*Message, ok bool, err error)
}

// Handler is the node side of an adapter: what the adapter calls to reach
// the node's local sockets. Calls may come from several goroutines.
type Handler interface {
	// DeliverLocal writes msg to the node's local sockets that match it.
	DeliverLocal(msg *Message)
	// DisconnectLocal disconnects the node's local sockets in any of rooms,
	// except those whose id is in except; close also closes their transports.
	DisconnectLocal(rooms, except []string, close bool)
}

// Adapter moves broadcasts and control messages between nodes.
type Adapter interface {
	// Start connects the adapter to the node. It is called once, before any
	// other method.
	Start(ctx context.Context, h Handler) error
	// Broadcast delivers msg to local sockets and to every other node that
	// holds a member of its rooms. It fails when msg cannot reach other nodes.
	Broadcast(ctx context.Context, msg *Message) error
	// DisconnectSockets disconnects the members of rooms on every node.
	DisconnectSockets(ctx context.Context, rooms []string, close bool) error
	// AddRoom is called when the node's first local socket joins room. It
	// returns once broadcasts to room from any node are sure to reach this one.
	AddRoom(ctx context.Context, room string) error
	// DelRoom is called when the node's last local socket leaves room.
	DelRoom(room string)
	// Close releases the adapter's resources.
	Close() error
}
