// Package socketio encodes and decodes Socket.IO v5 packets, the layer that
// rides inside Engine.IO message packets. It knows nothing of transports.
package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Type is a Socket.IO packet type.
type Type byte

// Packet types of Socket.IO v5.
const (
	Connect Type = iota
	Disconnect
	Event
	Ack
	ConnectError
	BinaryEvent
	BinaryAck
)

// MaxAttachments bounds the binary attachments of one packet, as Node's parser does.
const MaxAttachments = 10

// NoAck is the ID of a packet that asks for no acknowledgement.
const NoAck int64 = -1

// maxAckID keeps ack ids within what a JavaScript number holds exactly.
const maxAckID = 1<<53 - 1

// Errors returned by the decoder; each closes the offending connection.
var (
	ErrInvalidPacket  = errors.New("socketio: invalid packet")
	ErrInvalidPayload = errors.New("socketio: invalid payload")
	ErrUnexpectedBin  = errors.New("socketio: unexpected binary attachment")
	ErrPendingBinary  = errors.New("socketio: text packet while binary attachments are pending")
)

// reserved event names: the JavaScript client throws on receiving them, so
// they are never emitted; a client may not send them either.
var reserved = map[string]bool{
	"connect": true, "connect_error": true, "disconnect": true,
	"disconnecting": true, "newListener": true, "removeListener": true,
}

// IsReserved reports whether name is one of Socket.IO's reserved event names.
func IsReserved(name string) bool { return reserved[name] }

// Packet is one Socket.IO packet. Data is the raw JSON payload (nil when
// absent); for binary packets it still holds the {"_placeholder":true,"num":i}
// objects, and Attachments holds the buffers in order.
type Packet struct {
	Type        Type
	Nsp         string
	ID          int64
	Data        json.RawMessage
	Attachments [][]byte
	nAttach     int
}

// Encode returns the text part of p (without the Engine.IO '4' prefix);
// p.Attachments, if any, follow it as separate binary messages.
func Encode(p *Packet) []byte {
	return AppendEncode(make([]byte, 0, len(p.Data)+16), p)
}

// AppendEncode appends the text part of p to dst.
func AppendEncode(dst []byte, p *Packet) []byte {
	dst = append(dst, byte('0'+p.Type))
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		dst = strconv.AppendInt(dst, int64(len(p.Attachments)), 10)
		dst = append(dst, '-')
	}
	if p.Nsp != "" && p.Nsp != "/" {
		dst = append(dst, p.Nsp...)
		dst = append(dst, ',')
	}
	if p.ID >= 0 {
		dst = strconv.AppendInt(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}

// AppendEvent appends the text of an EVENT packet on the main namespace:
// 2["<name>",<arg>...]. Args must be valid JSON values.
func AppendEvent(dst []byte, name string, args ...json.RawMessage) []byte {
	q, _ := json.Marshal(name) // a string always marshals
	dst = append(dst, '2', '[')
	dst = append(dst, q...)
	for _, a := range args {
		dst = append(dst, ',')
		dst = append(dst, a...)
	}
	return append(dst, ']')
}

// Decoder turns Engine.IO messages back into Socket.IO packets, collecting
// binary attachments. One Decoder serves one connection; it is not safe for
// concurrent use.
type Decoder struct {
	pending *Packet
}

// AddText decodes a text message. It returns the packet when it is complete,
// or nil when binary attachments are still to come.
func (d *Decoder) AddText(b []byte) (*Packet, error) {
	if d.pending != nil {
		return nil, ErrPendingBinary
	}
	p, err := decodeString(b)
	if err != nil {
		return nil, err
	}
	if p.nAttach > 0 {
		d.pending = p
		return nil, nil
	}
	return p, nil
}

// AddBinary adds one binary attachment to the pending packet and returns it
// once all have arrived.
func (d *Decoder) AddBinary(b []byte) (*Packet, error) {
	p := d.pending
	if p == nil {
		return nil, ErrUnexpectedBin
	}
	p.Attachments = append(p.Attachments, b)
	if len(p.Attachments) < p.nAttach {
		return nil, nil
	}
	d.pending = nil
	return p, nil
}

// Pending reports whether attachments are awaited.
func (d *Decoder) Pending() bool { return d.pending != nil }

func decodeString(b []byte) (*Packet, error) {
	if len(b) == 0 || b[0] < '0' || b[0] > '6' {
		return nil, ErrInvalidPacket
	}
	p := &Packet{Type: Type(b[0] - '0'), Nsp: "/", ID: NoAck}
	i := 1
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start || i >= len(b) || b[i] != '-' || i-start > 2 {
			return nil, ErrInvalidPacket
		}
		n, _ := strconv.Atoi(string(b[start:i]))
		if n < 1 || n > MaxAttachments {
			return nil, fmt.Errorf("%w: %d attachments (max %d)", ErrInvalidPacket, n, MaxAttachments)
		}
		p.nAttach = n
		i++
	}
	if i < len(b) && b[i] == '/' {
		end := bytes.IndexByte(b[i:], ',')
		if end < 0 {
			end = len(b) - i
		}
		nsp := b[i : i+end]
		// The namespace is echoed in replies, which must be valid text.
		if !utf8.Valid(nsp) {
			return nil, ErrInvalidPacket
		}
		p.Nsp = string(nsp)
		i = min(i+end+1, len(b))
	}
	if i < len(b) && b[i] >= '0' && b[i] <= '9' {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		id, err := strconv.ParseInt(string(b[start:i]), 10, 64)
		if err != nil || id > maxAckID {
			return nil, ErrInvalidPacket
		}
		p.ID = id
	}
	if i < len(b) {
		p.Data = json.RawMessage(b[i:])
	}
	if err := validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

// validate applies the payload rules of Node's parser (isPayloadValid).
func validate(p *Packet) error {
	if p.Data != nil && !json.Valid(p.Data) {
		return ErrInvalidPayload
	}
	first := firstByte(p.Data)
	switch p.Type {
	case Connect:
		if p.Data != nil && first != '{' {
			return ErrInvalidPayload
		}
	case Disconnect:
		if p.Data != nil {
			return ErrInvalidPayload
		}
	case ConnectError:
		if first != '{' && first != '"' {
			return ErrInvalidPayload
		}
	case Event, BinaryEvent:
		if first != '[' {
			return ErrInvalidPayload
		}
		if _, err := eventName(p.Data); err != nil {
			return err
		}
	case Ack, BinaryAck:
		if first != '[' {
			return ErrInvalidPayload
		}
	}
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		return checkPlaceholders(p.Data, p.nAttach)
	}
	return nil
}

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// eventName returns the first element of an event array: a string that is
// not reserved, or a number (which Node accepts and stringifies).
func eventName(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '['
		return "", ErrInvalidPayload
	}
	if !dec.More() {
		return "", ErrInvalidPayload
	}
	tok, err := dec.Token()
	if err != nil {
		return "", ErrInvalidPayload
	}
	switch v := tok.(type) {
	case string:
		if reserved[v] {
			return "", fmt.Errorf("%w: reserved event name %q", ErrInvalidPayload, v)
		}
		return v, nil
	case json.Number:
		return v.String(), nil
	}
	return "", ErrInvalidPayload
}

// EventName returns the name of an EVENT or BINARY_EVENT packet.
func (p *Packet) EventName() string {
	name, _ := eventName(p.Data)
	return name
}

// EventArgs returns the arguments of an event packet, after its name.
func (p *Packet) EventArgs() []json.RawMessage {
	var all []json.RawMessage
	if err := json.Unmarshal(p.Data, &all); err != nil || len(all) == 0 {
		return nil
	}
	return all[1:]
}

// checkPlaceholders verifies every placeholder refers to an attachment that exists.
func checkPlaceholders(data []byte, n int) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return ErrInvalidPayload
	}
	var walk func(any) error
	walk = func(v any) error {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
		case map[string]any:
			if ph, _ := x["_placeholder"].(bool); ph {
				num, ok := x["num"].(float64)
				if !ok || num < 0 || int(num) >= n || num != float64(int(num)) {
					return fmt.Errorf("%w: bad attachment placeholder", ErrInvalidPayload)
				}
				return nil
			}
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v)
}
