// Package engineio encodes and decodes Engine.IO v4 packets and polling payloads.
// It knows nothing of HTTP, WebSocket libraries or Socket.IO.
package engineio

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
)

// Type is an Engine.IO packet type.
type Type byte

// Packet types of Engine.IO v4, as their wire digit minus '0'.
const (
	Open Type = iota
	Close
	Ping
	Pong
	Message
	Upgrade
	Noop
)

// Protocol is the only Engine.IO protocol revision served (socket.io-client 3.x and 4.x).
const Protocol = "4"

// Separator joins packets in a polling payload (ASCII record separator).
const Separator = 0x1e

// ErrParse reports a packet that is not valid Engine.IO v4.
var ErrParse = errors.New("engineio: parse error")

// Packet is one decoded Engine.IO packet. Binary is true for a binary
// message, whose Data is raw bytes (no type byte on WebSocket, base64 in polling).
type Packet struct {
	Type   Type
	Data   []byte
	Binary bool
}

// OpenInfo is the JSON body of the open packet; the key set is fixed by the spec.
type OpenInfo struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int64    `json:"pingInterval"`
	PingTimeout  int64    `json:"pingTimeout"`
	MaxPayload   int64    `json:"maxPayload"`
}

// EncodeOpen returns the text of the open packet: '0' followed by the JSON.
func EncodeOpen(info OpenInfo) []byte {
	if info.Upgrades == nil {
		info.Upgrades = []string{}
	}
	b, _ := json.Marshal(info) // cannot fail: plain strings and numbers
	return append([]byte{'0'}, b...)
}

// AppendText appends the text form of a packet: the type digit and the data.
func AppendText(dst []byte, t Type, data []byte) []byte {
	dst = append(dst, byte('0'+t))
	return append(dst, data...)
}

// DecodeText decodes one text packet (a WebSocket text frame or one polling record).
func DecodeText(b []byte) (Packet, error) {
	if len(b) == 0 || b[0] < '0' || b[0] > '6' {
		return Packet{}, ErrParse
	}
	return Packet{Type: Type(b[0] - '0'), Data: b[1:]}, nil
}

// EncodePayload joins packets into one polling response body. Binary
// messages are written as 'b' followed by standard base64, as v4 requires.
func EncodePayload(pkts []Packet) []byte {
	n := 0
	for _, p := range pkts {
		n += len(p.Data) + 2
		if p.Binary {
			n += len(p.Data) / 2
		}
	}
	out := make([]byte, 0, n)
	for i, p := range pkts {
		if i > 0 {
			out = append(out, Separator)
		}
		if p.Binary {
			out = append(out, 'b')
			out = base64.StdEncoding.AppendEncode(out, p.Data)
			continue
		}
		out = AppendText(out, p.Type, p.Data)
	}
	return out
}

// DecodePayload splits a polling request body into packets.
func DecodePayload(body []byte) ([]Packet, error) {
	if len(body) == 0 {
		return nil, ErrParse
	}
	var pkts []Packet
	for rec := range bytes.SplitSeq(body, []byte{Separator}) {
		if len(rec) > 0 && rec[0] == 'b' {
			data, err := base64.StdEncoding.DecodeString(string(rec[1:]))
			if err != nil {
				return nil, ErrParse
			}
			pkts = append(pkts, Packet{Type: Message, Data: data, Binary: true})
			continue
		}
		p, err := DecodeText(rec)
		if err != nil {
			return nil, err
		}
		pkts = append(pkts, p)
	}
	return pkts, nil
}

// NewID returns a 20-character URL-safe random id, the shape Node's base64id
// produces (15 random bytes). Socket ids keep that length because the Redis
// adapter family treats 20-character room names as socket ids.
func NewID() string {
	var b [15]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}
