package adapter

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// relayFrom builds the recorder's copy of an emitter broadcast from the
// broadcast's own bytes: the sender's uid replaced, an offset placeholder
// appended to the event's data, and the relay flag as the last option.
// Only the framing is rewritten: the event's arguments are copied as they
// came, since decoding them to JSON and encoding them again cost the
// recorder most of its time.
func relayFrom(orig []byte, uid, placeholder, relay string) ([]byte, error) {
	r := bytes.NewReader(orig)
	d := msgpack.NewDecoder(r)
	pos := func() int { return len(orig) - r.Len() }
	var out bytes.Buffer
	out.Grow(len(orig) + len(placeholder) + 48)
	e := msgpack.NewEncoder(&out)
	e.UseCompactInts(true)

	if n, err := d.DecodeArrayLen(); err != nil || n != 3 {
		return nil, errors.Join(errMalformed, err)
	}
	if err := d.Skip(); err != nil { // the uid
		return nil, errors.Join(errMalformed, err)
	}
	_ = errors.Join(e.EncodeArrayLen(3), e.EncodeString(uid))

	// The packet: every entry as it is, but data, one element longer.
	start := pos()
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, errors.Join(errMalformed, err)
	}
	out.Write(orig[start:pos()])
	withData := false
	for range n {
		key := pos()
		k, err := d.DecodeString()
		if err != nil {
			return nil, errors.Join(errMalformed, err)
		}
		if k != "data" {
			if err := d.Skip(); err != nil {
				return nil, errors.Join(errMalformed, err)
			}
			out.Write(orig[key:pos()])
			continue
		}
		out.Write(orig[key:pos()])
		items, err := d.DecodeArrayLen()
		if err != nil || items < 1 || withData {
			return nil, errors.Join(fmt.Errorf("adapter: packet data is not one non-empty array"), err)
		}
		from := pos()
		for range items {
			if err := d.Skip(); err != nil {
				return nil, errors.Join(errMalformed, err)
			}
		}
		_ = e.EncodeArrayLen(items + 1)
		out.Write(orig[from:pos()])
		_ = e.EncodeString(placeholder)
		withData = true
	}
	if !withData {
		return nil, errors.New("adapter: packet without data")
	}

	// The options: every entry but flags, then flags holding the relay.
	n, err = d.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, errors.Join(errMalformed, err)
	}
	var kept [][]byte
	for range n {
		key := pos()
		k, err := d.DecodeString()
		if err == nil {
			err = d.Skip()
		}
		if err != nil {
			return nil, errors.Join(errMalformed, err)
		}
		if k != "flags" {
			kept = append(kept, orig[key:pos()])
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("adapter: %d trailing bytes", r.Len())
	}
	_ = e.EncodeMapLen(len(kept) + 1)
	for _, kv := range kept {
		out.Write(kv)
	}
	_ = errors.Join(e.EncodeString("flags"), e.EncodeMapLen(1), e.EncodeString(relayFlag), e.EncodeString(relay))
	return out.Bytes(), nil
}
