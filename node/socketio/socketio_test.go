package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/messaging-hub/hubnode/node/engineio"
)

// fmtPacket prints every field, including the unexported attachment count.
func fmtPacket(p *Packet) string {
	if p == nil {
		return "<nil>"
	}
	data := "<nil>"
	if p.Data != nil {
		data = fmt.Sprintf("%q", []byte(p.Data))
	}
	return fmt.Sprintf("{Type:%d Nsp:%q ID:%d Data:%s Attachments:%q nAttach:%d}",
		p.Type, p.Nsp, p.ID, data, p.Attachments, p.nAttach)
}

// samePacket compares all fields; Data must agree on nil-ness too, since a
// nil Data means "no payload" (e.g. DISCONNECT) and is encoded differently.
func samePacket(a, b *Packet) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Type != b.Type || a.Nsp != b.Nsp || a.ID != b.ID || a.nAttach != b.nAttach {
		return false
	}
	if (a.Data == nil) != (b.Data == nil) || !bytes.Equal(a.Data, b.Data) {
		return false
	}
	return slices.EqualFunc(a.Attachments, b.Attachments, bytes.Equal)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// decodeAll feeds one text message and then the binary messages to a fresh
// Decoder, checking the intermediate results, and returns the final packet.
func decodeAll(t *testing.T, text string, bins [][]byte) (*Packet, error) {
	t.Helper()
	var d Decoder
	p, err := d.AddText([]byte(text))
	if err != nil || len(bins) == 0 {
		if err != nil && d.Pending() {
			t.Errorf("AddText(%q) failed (%v) but left the decoder pending", text, err)
		}
		return p, err
	}
	if p != nil || !d.Pending() {
		t.Fatalf("AddText(%q) = %s, pending %t; want nil and pending attachments", text, fmtPacket(p), d.Pending())
	}
	for i, b := range bins {
		p, err = d.AddBinary(b)
		if err != nil {
			t.Fatalf("AddBinary #%d: %v", i, err)
		}
		last := i == len(bins)-1
		if last != (p != nil) || last == d.Pending() {
			t.Fatalf("AddBinary #%d of %d = %s, pending %t", i, len(bins), fmtPacket(p), d.Pending())
		}
	}
	return p, nil
}

func TestDecodeAccepts(t *testing.T) {
	ph0 := `{"_placeholder":true,"num":0}`
	ph1 := `{"_placeholder":true,"num":1}`
	tests := []struct {
		name string
		in   string
		bins [][]byte
		want Packet
	}{
		// CONNECT (SIO-SPEC "Connection to a namespace"; protocol.md §2.3, §7.1)
		{"connect main no payload", "0", nil, Packet{Type: Connect, Nsp: "/", ID: NoAck}},
		{"connect with auth", `0{"token":"x"}`, nil, Packet{Type: Connect, Nsp: "/", ID: NoAck, Data: raw(`{"token":"x"}`)}},
		{"connect admin", "0/admin,", nil, Packet{Type: Connect, Nsp: "/admin", ID: NoAck}},
		{"connect admin with auth", `0/admin,{"token":"x"}`, nil, Packet{Type: Connect, Nsp: "/admin", ID: NoAck, Data: raw(`{"token":"x"}`)}},
		{"connect custom without comma", "0/custom", nil, Packet{Type: Connect, Nsp: "/custom", ID: NoAck}},
		{"connect explicit main nsp", "0/,", nil, Packet{Type: Connect, Nsp: "/", ID: NoAck}},
		{"connect bare slash", "0/", nil, Packet{Type: Connect, Nsp: "/", ID: NoAck}},
		{"connect empty object", "0{}", nil, Packet{Type: Connect, Nsp: "/", ID: NoAck, Data: raw(`{}`)}},
		{"connect payload kept verbatim", "0 {\"a\":1}\n", nil, Packet{Type: Connect, Nsp: "/", ID: NoAck, Data: raw(" {\"a\":1}\n")}},
		{"connect nested nsp path", "0/a/b-c_d.e,", nil, Packet{Type: Connect, Nsp: "/a/b-c_d.e", ID: NoAck}},
		// DISCONNECT
		{"disconnect main", "1", nil, Packet{Type: Disconnect, Nsp: "/", ID: NoAck}},
		{"disconnect admin", "1/admin,", nil, Packet{Type: Disconnect, Nsp: "/admin", ID: NoAck}},
		{"disconnect custom without comma", "1/custom", nil, Packet{Type: Disconnect, Nsp: "/custom", ID: NoAck}},
		// EVENT (SIO-SPEC "Examples")
		{"event", `2["foo"]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["foo"]`)}},
		{"event admin", `2/admin,["bar"]`, nil, Packet{Type: Event, Nsp: "/admin", ID: NoAck, Data: raw(`["bar"]`)}},
		{"event with ack id", `212["foo"]`, nil, Packet{Type: Event, Nsp: "/", ID: 12, Data: raw(`["foo"]`)}},
		{"event admin with ack id", `2/admin,17["foo",1]`, nil, Packet{Type: Event, Nsp: "/admin", ID: 17, Data: raw(`["foo",1]`)}},
		{"event ack id zero", `20["foo"]`, nil, Packet{Type: Event, Nsp: "/", ID: 0, Data: raw(`["foo"]`)}},
		{"event ack id leading zeros", `2007["foo"]`, nil, Packet{Type: Event, Nsp: "/", ID: 7, Data: raw(`["foo"]`)}},
		{"event max ack id", `29007199254740991["foo"]`, nil, Packet{Type: Event, Nsp: "/", ID: 1<<53 - 1, Data: raw(`["foo"]`)}},
		{"event numeric name", `2[42]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`[42]`)}},
		{"event numeric name with args", `2[-1.5,"x"]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`[-1.5,"x"]`)}},
		{"event empty string name", `2[""]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`[""]`)}},
		{"event reserved name prefix", `2["connected"]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["connected"]`)}},
		{"event reserved name other case", `2["Disconnect"]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["Disconnect"]`)}},
		{"event with object args", `2["new_message",{"id":1,"text":"hi"}]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["new_message",{"id":1,"text":"hi"}]`)}},
		{"event whitespace inside JSON", `2[ "foo" , 1 ]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`[ "foo" , 1 ]`)}},
		{"event placeholder is plain data", `2["foo",` + ph0 + `]`, nil, Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["foo",` + ph0 + `]`)}},
		// ACK
		{"ack empty", `31[]`, nil, Packet{Type: Ack, Nsp: "/", ID: 1, Data: raw(`[]`)}},
		{"ack admin", `3/admin,13["bar"]`, nil, Packet{Type: Ack, Nsp: "/admin", ID: 13, Data: raw(`["bar"]`)}},
		{"ack without id", `3["x"]`, nil, Packet{Type: Ack, Nsp: "/", ID: NoAck, Data: raw(`["x"]`)}},
		{"ack reserved name is fine", `35["disconnect"]`, nil, Packet{Type: Ack, Nsp: "/", ID: 5, Data: raw(`["disconnect"]`)}},
		// CONNECT_ERROR
		{"connect error object", `4{"message":"Not authorized"}`, nil, Packet{Type: ConnectError, Nsp: "/", ID: NoAck, Data: raw(`{"message":"Not authorized"}`)}},
		{"connect error invalid nsp", `4/random,{"message":"Invalid namespace"}`, nil, Packet{Type: ConnectError, Nsp: "/random", ID: NoAck, Data: raw(`{"message":"Invalid namespace"}`)}},
		{"connect error string", `4"oops"`, nil, Packet{Type: ConnectError, Nsp: "/", ID: NoAck, Data: raw(`"oops"`)}},
		// BINARY_EVENT / BINARY_ACK (SIO-SPEC "Binary")
		{"binary event", `51-["baz",` + ph0 + `]`, [][]byte{{1, 2, 3, 4}},
			Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["baz",` + ph0 + `]`), Attachments: [][]byte{{1, 2, 3, 4}}, nAttach: 1}},
		{"binary event two attachments", `52-/admin,["baz",` + ph0 + `,` + ph1 + `]`, [][]byte{{1}, {2, 3}},
			Packet{Type: BinaryEvent, Nsp: "/admin", ID: NoAck, Data: raw(`["baz",` + ph0 + `,` + ph1 + `]`), Attachments: [][]byte{{1}, {2, 3}}, nAttach: 2}},
		{"binary event nested placeholders out of order", `52-["up",{"files":[` + ph1 + `,{"x":` + ph0 + `}]}]`, [][]byte{{0xa}, {0xb}},
			Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["up",{"files":[` + ph1 + `,{"x":` + ph0 + `}]}]`), Attachments: [][]byte{{0xa}, {0xb}}, nAttach: 2}},
		{"binary event with ack", `51-7["up",` + ph0 + `]`, [][]byte{{}},
			Packet{Type: BinaryEvent, Nsp: "/", ID: 7, Data: raw(`["up",` + ph0 + `]`), Attachments: [][]byte{{}}, nAttach: 1}},
		{"binary event unreferenced attachment", `51-["baz"]`, [][]byte{{9}},
			Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["baz"]`), Attachments: [][]byte{{9}}, nAttach: 1}},
		{"binary event leading zero count", `501-["baz",` + ph0 + `]`, [][]byte{{1}},
			Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["baz",` + ph0 + `]`), Attachments: [][]byte{{1}}, nAttach: 1}},
		{"binary event ten attachments", `510-["x",` + placeholders(10) + `]`, nBins(10),
			Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["x",` + placeholders(10) + `]`), Attachments: nBins(10), nAttach: 10}},
		{"binary ack", `61-15["bar",` + ph0 + `]`, [][]byte{{0xff}},
			Packet{Type: BinaryAck, Nsp: "/", ID: 15, Data: raw(`["bar",` + ph0 + `]`), Attachments: [][]byte{{0xff}}, nAttach: 1}},
		{"binary ack admin", `61-/admin,15[` + ph0 + `]`, [][]byte{{0}},
			Packet{Type: BinaryAck, Nsp: "/admin", ID: 15, Data: raw(`[` + ph0 + `]`), Attachments: [][]byte{{0}}, nAttach: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeAll(t, tc.in, tc.bins)
			if err != nil {
				t.Fatalf("decode %q: %v", tc.in, err)
			}
			if !samePacket(got, &tc.want) {
				t.Fatalf("decode %q\n got %s\nwant %s", tc.in, fmtPacket(got), fmtPacket(&tc.want))
			}
		})
	}
}

func placeholders(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"_placeholder":true,"num":%d}`, i)
	}
	return strings.Join(parts, ",")
}

func nBins(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = []byte{byte(i)}
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"empty input", "", ErrInvalidPacket},
		{"type 7", "7", ErrInvalidPacket},
		{"type 8", "8", ErrInvalidPacket},
		{"type 8 with payload", `8["foo"]`, ErrInvalidPacket},
		{"letter type", "abc", ErrInvalidPacket},
		{"engine.io prefix left on", `42["foo"]`, ErrInvalidPayload}, // CONNECT_ERROR, ack id 2, array payload
		{"space type", ` 2["foo"]`, ErrInvalidPacket},
		// EVENT payload rules (parser isPayloadValid; SIO-SPEC tests)
		{"event object payload", `2{}`, ErrInvalidPayload},
		{"event invalid ack id", `2abc["foo"]`, ErrInvalidPayload},
		{"event empty array", `2[]`, ErrInvalidPayload},
		{"event empty array with spaces", `2[ ]`, ErrInvalidPayload},
		{"event no payload", `2`, ErrInvalidPayload},
		{"event nsp no payload", `2/admin`, ErrInvalidPayload},
		{"event nsp comma no payload", `2/admin,`, ErrInvalidPayload},
		{"event ack id no payload", `212`, ErrInvalidPayload},
		{"event string payload", `2"foo"`, ErrInvalidPayload},
		{"event null name", `2[null]`, ErrInvalidPayload},
		{"event bool name", `2[true,"x"]`, ErrInvalidPayload},
		{"event object name", `2[{"a":1}]`, ErrInvalidPayload},
		{"event array name", `2[["foo"]]`, ErrInvalidPayload},
		{"event name escaped reserved", `2["\u0063onnect"]`, ErrInvalidPayload},
		{"event nsp without comma swallows payload", `2/admin["foo"]`, ErrInvalidPayload},
		// ack ids
		{"ack id above 2^53-1", `29007199254740992["foo"]`, ErrInvalidPacket},
		{"ack id overflows int64", `299999999999999999999["foo"]`, ErrInvalidPacket},
		{"ack ack id above 2^53-1", `39007199254740992[]`, ErrInvalidPacket},
		// DISCONNECT must be bare
		{"disconnect with object", `1{}`, ErrInvalidPayload},
		{"disconnect admin with object", `1/admin,{}`, ErrInvalidPayload},
		{"disconnect with array", `1[]`, ErrInvalidPayload},
		{"disconnect with string", `1"bye"`, ErrInvalidPayload},
		// CONNECT payload must be an object
		{"connect array", `0[]`, ErrInvalidPayload},
		{"connect string", `0"token"`, ErrInvalidPayload},
		{"connect null", `0null`, ErrInvalidPayload},
		{"connect number", `0 1`, ErrInvalidPayload},
		// CONNECT_ERROR payload must be an object or string
		{"connect error no payload", `4`, ErrInvalidPayload},
		{"connect error number is an ack id", `4123`, ErrInvalidPayload},
		{"connect error negative number", `4-1`, ErrInvalidPayload},
		{"connect error spaced number", `4 42`, ErrInvalidPayload},
		{"connect error float", `41.5`, ErrInvalidPayload},
		{"connect error array", `4[]`, ErrInvalidPayload},
		{"connect error null", `4null`, ErrInvalidPayload},
		{"connect error true", `4true`, ErrInvalidPayload},
		// ACK payload must be an array
		{"ack no payload", `3`, ErrInvalidPayload},
		{"ack id no payload", `31`, ErrInvalidPayload},
		{"ack object", `31{}`, ErrInvalidPayload},
		{"ack string", `31"x"`, ErrInvalidPayload},
		// invalid JSON
		{"unterminated array", `2["foo"`, ErrInvalidPayload},
		{"trailing comma", `2["foo",]`, ErrInvalidPayload},
		{"trailing garbage", `2["foo"]x`, ErrInvalidPayload},
		{"two values", `2["foo"]["bar"]`, ErrInvalidPayload},
		{"single quotes", `2['foo']`, ErrInvalidPayload},
		{"connect unterminated", `0{`, ErrInvalidPayload},
		{"connect bad value", `0{"a":}`, ErrInvalidPayload},
		{"ack bad JSON", `31[1,]`, ErrInvalidPayload},
		{"connect error raw string", `4oops`, ErrInvalidPayload},
		// attachment count
		{"11 attachments", `511-["x",` + placeholders(11) + `]`, ErrInvalidPacket},
		{"99 attachments", `599-["x"]`, ErrInvalidPacket},
		{"three digit count", `5100-["x"]`, ErrInvalidPacket},
		{"three digit count with leading zeros", `5001-["x",{"_placeholder":true,"num":0}]`, ErrInvalidPacket},
		{"empty count", `5-["x"]`, ErrInvalidPacket},
		{"no dash", `51["x"]`, ErrInvalidPacket},
		{"count only", `51`, ErrInvalidPacket},
		{"type only", `5`, ErrInvalidPacket},
		{"letter count", `5a-["x"]`, ErrInvalidPacket},
		{"signed count", `5+1-["x"]`, ErrInvalidPacket},
		{"binary ack 11 attachments", `611-[]`, ErrInvalidPacket},
		{"binary event no payload", `51-`, ErrInvalidPayload},
		{"binary event reserved name", `51-["connect",{"_placeholder":true,"num":0}]`, ErrInvalidPayload},
		{"binary event object payload", `51-{"_placeholder":true,"num":0}`, ErrInvalidPayload},
		{"binary ack object payload", `61-1{}`, ErrInvalidPayload},
		// placeholders (parser reconstructPacket "illegal attachments")
		{"placeholder num out of range", `51-["x",{"_placeholder":true,"num":1}]`, ErrInvalidPayload},
		{"placeholder num far out of range", `52-["x",{"_placeholder":true,"num":1000000}]`, ErrInvalidPayload},
		{"placeholder num huge", `51-["x",{"_placeholder":true,"num":1e300}]`, ErrInvalidPayload},
		{"placeholder num 2^63", `51-["x",{"_placeholder":true,"num":9223372036854775808}]`, ErrInvalidPayload},
		{"placeholder num negative", `51-["x",{"_placeholder":true,"num":-1}]`, ErrInvalidPayload},
		{"placeholder num fractional", `51-["x",{"_placeholder":true,"num":0.5}]`, ErrInvalidPayload},
		{"placeholder num string", `51-["x",{"_placeholder":true,"num":"0"}]`, ErrInvalidPayload},
		{"placeholder num missing", `51-["x",{"_placeholder":true}]`, ErrInvalidPayload},
		{"placeholder num null", `51-["x",{"_placeholder":true,"num":null}]`, ErrInvalidPayload},
		{"placeholder nested out of range", `52-["x",{"a":[{"b":{"_placeholder":true,"num":2}}]}]`, ErrInvalidPayload},
		{"placeholder in binary ack out of range", `61-3[{"_placeholder":true,"num":1}]`, ErrInvalidPayload},
		// Node's parser throws "Illegal attachments" for a count below 1.
		{"zero attachments", `50-["x",{"_placeholder":true,"num":0}]`, ErrInvalidPacket},
		{"zero attachments binary ack", `60-1[{"_placeholder":true,"num":3}]`, ErrInvalidPacket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			p, err := d.AddText([]byte(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("AddText(%q) = %s, %v; want error %v", tc.in, fmtPacket(p), err, tc.wantErr)
			}
			if p != nil {
				t.Fatalf("AddText(%q) returned packet %s with an error", tc.in, fmtPacket(p))
			}
			if d.Pending() {
				t.Fatalf("AddText(%q) failed but left attachments pending", tc.in)
			}
			// The decoder stays usable (tests the state, not the policy:
			// the server closes the connection on any error).
			if p, err := d.AddText([]byte(`2["ok"]`)); err != nil || p == nil {
				t.Fatalf("AddText after error = %s, %v", fmtPacket(p), err)
			}
		})
	}
}

func TestDecodeReservedNames(t *testing.T) {
	names := []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
	for _, name := range names {
		if !IsReserved(name) {
			t.Errorf("IsReserved(%q) = false", name)
		}
		for _, in := range []string{
			`2["` + name + `"]`,
			`2["` + name + `",1,{"a":2}]`,
			`2/admin,["` + name + `"]`,
			`27["` + name + `"]`,
			`51-["` + name + `",{"_placeholder":true,"num":0}]`,
		} {
			var d Decoder
			p, err := d.AddText([]byte(in))
			if !errors.Is(err, ErrInvalidPayload) || p != nil || d.Pending() {
				t.Errorf("AddText(%q) = %s, %v, pending %t; want ErrInvalidPayload", in, fmtPacket(p), err, d.Pending())
			}
		}
	}
	for _, name := range []string{"", "Connect", "connect ", "disconnected", "new_message", "authenticate", "error", "message", "ping"} {
		if IsReserved(name) {
			t.Errorf("IsReserved(%q) = true", name)
		}
	}
}

// TestDecodeWire feeds complete Engine.IO frames, as they appear in the
// protocol brief, through engineio.DecodeText and the Socket.IO Decoder.
func TestDecodeWire(t *testing.T) {
	type msg struct {
		text   string
		binary []byte
	}
	tests := []struct {
		name    string
		frames  []msg
		want    []string // Encode of each completed packet, in order
		wantErr error    // returned by the last frame
	}{
		{"reference transcript", []msg{{text: "40"}, {text: `42["authenticate",{"token":"eyJ"}]`}, {text: `421["authenticate",{"token":"eyJ"}]`}, {text: "41"}},
			[]string{"0", `2["authenticate",{"token":"eyJ"}]`, `21["authenticate",{"token":"eyJ"}]`, "1"}, nil},
		{"ack", []msg{{text: "431[]"}}, []string{"31[]"}, nil},
		{"binary event then text", []msg{{text: `451-["baz",{"_placeholder":true,"num":0}]`}, {binary: []byte{1, 2, 3, 4}}, {text: `42["next"]`}},
			[]string{`51-["baz",{"_placeholder":true,"num":0}]`, `2["next"]`}, nil},
		{"two attachments", []msg{{text: `452-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`}, {binary: []byte{1}}, {binary: []byte{2}}},
			[]string{`52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`}, nil},
		{"binary ack", []msg{{text: `461-15["bar",{"_placeholder":true,"num":0}]`}, {binary: []byte{}}},
			[]string{`61-15["bar",{"_placeholder":true,"num":0}]`}, nil},
		{"text while attachments pending", []msg{{text: `451-["baz",{"_placeholder":true,"num":0}]`}, {text: `42["x"]`}},
			nil, ErrPendingBinary},
		{"binary with none pending", []msg{{binary: []byte{1}}}, nil, ErrUnexpectedBin},
		{"extra binary after completion", []msg{{text: `451-["baz",{"_placeholder":true,"num":0}]`}, {binary: []byte{1}}, {binary: []byte{2}}},
			[]string{`51-["baz",{"_placeholder":true,"num":0}]`}, ErrUnexpectedBin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			var got []string
			var err error
			for i, m := range tc.frames {
				var p *Packet
				if m.binary != nil {
					p, err = d.AddBinary(m.binary)
				} else {
					ep, eerr := engineio.DecodeText([]byte(m.text))
					if eerr != nil || ep.Type != engineio.Message {
						t.Fatalf("frame %q: engine.io %+v, %v", m.text, ep, eerr)
					}
					p, err = d.AddText(ep.Data)
				}
				if err != nil {
					if i != len(tc.frames)-1 {
						t.Fatalf("frame %d: unexpected error %v", i, err)
					}
					break
				}
				if p != nil {
					got = append(got, string(Encode(p)))
				}
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("last error = %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("packets %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecoderState(t *testing.T) {
	var d Decoder
	if d.Pending() {
		t.Fatal("zero Decoder is pending")
	}
	if p, err := d.AddBinary([]byte{1}); !errors.Is(err, ErrUnexpectedBin) || p != nil {
		t.Fatalf("AddBinary on idle decoder = %s, %v; want ErrUnexpectedBin", fmtPacket(p), err)
	}
	if p, err := d.AddText([]byte(`52-["x",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]`)); p != nil || err != nil {
		t.Fatalf("AddText(binary event) = %s, %v; want nil, nil", fmtPacket(p), err)
	}
	if !d.Pending() {
		t.Fatal("not pending after a binary event header")
	}
	if p, err := d.AddText([]byte(`2["x"]`)); !errors.Is(err, ErrPendingBinary) || p != nil {
		t.Fatalf("AddText while pending = %s, %v; want ErrPendingBinary", fmtPacket(p), err)
	}
	if !d.Pending() {
		t.Fatal("ErrPendingBinary dropped the pending packet")
	}
	first, second := []byte("first"), []byte("second")
	if p, err := d.AddBinary(first); p != nil || err != nil || !d.Pending() {
		t.Fatalf("AddBinary 1/2 = %s, %v, pending %t", fmtPacket(p), err, d.Pending())
	}
	p, err := d.AddBinary(second)
	if err != nil || p == nil || d.Pending() {
		t.Fatalf("AddBinary 2/2 = %s, %v, pending %t", fmtPacket(p), err, d.Pending())
	}
	want := &Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck,
		Data:        raw(`["x",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]`),
		Attachments: [][]byte{[]byte("first"), []byte("second")}, nAttach: 2}
	if !samePacket(p, want) {
		t.Fatalf("completed packet\n got %s\nwant %s", fmtPacket(p), fmtPacket(want))
	}
	if p, err := d.AddBinary([]byte{1}); !errors.Is(err, ErrUnexpectedBin) || p != nil {
		t.Fatalf("AddBinary after completion = %s, %v; want ErrUnexpectedBin", fmtPacket(p), err)
	}
	// A second binary packet on the same decoder starts from scratch.
	if p, err := d.AddText([]byte(`61-4[{"_placeholder":true,"num":0}]`)); p != nil || err != nil {
		t.Fatalf("AddText(binary ack) = %s, %v", fmtPacket(p), err)
	}
	p, err = d.AddBinary([]byte{7})
	want = &Packet{Type: BinaryAck, Nsp: "/", ID: 4, Data: raw(`[{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{7}}, nAttach: 1}
	if err != nil || !samePacket(p, want) {
		t.Fatalf("binary ack = %s, %v; want %s", fmtPacket(p), err, fmtPacket(want))
	}
	// A rejected binary header leaves nothing pending.
	if _, err := d.AddText([]byte(`51-["x",{"_placeholder":true,"num":1}]`)); !errors.Is(err, ErrInvalidPayload) || d.Pending() {
		t.Fatalf("bad placeholder: err %v, pending %t", err, d.Pending())
	}
}

func TestEncode(t *testing.T) {
	ph0 := `{"_placeholder":true,"num":0}`
	ph1 := `{"_placeholder":true,"num":1}`
	tests := []struct {
		name string
		p    Packet
		want string
	}{
		{"connect main", Packet{Type: Connect, Nsp: "/", ID: NoAck}, "0"},
		{"connect empty nsp", Packet{Type: Connect, Nsp: "", ID: NoAck}, "0"},
		{"connect reply", Packet{Type: Connect, Nsp: "/", ID: NoAck, Data: raw(`{"sid":"abc"}`)}, `0{"sid":"abc"}`},
		{"connect reply admin", Packet{Type: Connect, Nsp: "/admin", ID: NoAck, Data: raw(`{"sid":"abc"}`)}, `0/admin,{"sid":"abc"}`},
		{"disconnect main", Packet{Type: Disconnect, Nsp: "/", ID: NoAck}, "1"},
		{"disconnect admin", Packet{Type: Disconnect, Nsp: "/admin", ID: NoAck}, "1/admin,"},
		{"event", Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["foo"]`)}, `2["foo"]`},
		{"event admin", Packet{Type: Event, Nsp: "/admin", ID: NoAck, Data: raw(`["bar"]`)}, `2/admin,["bar"]`},
		{"event ack id", Packet{Type: Event, Nsp: "/", ID: 12, Data: raw(`["foo"]`)}, `212["foo"]`},
		{"event ack id zero", Packet{Type: Event, Nsp: "/", ID: 0, Data: raw(`["foo"]`)}, `20["foo"]`},
		{"event ack id after nsp comma", Packet{Type: Event, Nsp: "/admin", ID: 17, Data: raw(`["a"]`)}, `2/admin,17["a"]`},
		{"event max ack id", Packet{Type: Event, Nsp: "/", ID: 1<<53 - 1, Data: raw(`["a"]`)}, `29007199254740991["a"]`},
		{"ack empty", Packet{Type: Ack, Nsp: "/", ID: 1, Data: raw(`[]`)}, `31[]`},
		{"ack admin", Packet{Type: Ack, Nsp: "/admin", ID: 13, Data: raw(`["bar"]`)}, `3/admin,13["bar"]`},
		{"ack id after type digit", Packet{Type: Ack, Nsp: "/", ID: 17, Data: raw(`[null]`)}, `317[null]`},
		{"connect error", Packet{Type: ConnectError, Nsp: "/", ID: NoAck, Data: raw(`{"message":"Not authorized","data":{"code":1}}`)}, `4{"message":"Not authorized","data":{"code":1}}`},
		{"connect error invalid nsp", Packet{Type: ConnectError, Nsp: "/random", ID: NoAck, Data: raw(`{"message":"Invalid namespace"}`)}, `4/random,{"message":"Invalid namespace"}`},
		{"binary event", Packet{Type: BinaryEvent, Nsp: "/", ID: NoAck, Data: raw(`["baz",` + ph0 + `]`), Attachments: [][]byte{{1, 2, 3, 4}}},
			`51-["baz",` + ph0 + `]`},
		{"binary event two attachments admin", Packet{Type: BinaryEvent, Nsp: "/admin", ID: NoAck, Data: raw(`["baz",` + ph0 + `,` + ph1 + `]`), Attachments: [][]byte{{1}, {2}}},
			`52-/admin,["baz",` + ph0 + `,` + ph1 + `]`},
		{"binary event ten attachments", Packet{Type: BinaryEvent, Nsp: "/", ID: 3, Data: raw(`["x",` + placeholders(10) + `]`), Attachments: nBins(10)},
			`510-3["x",` + placeholders(10) + `]`},
		{"binary ack", Packet{Type: BinaryAck, Nsp: "/", ID: 15, Data: raw(`["bar",` + ph0 + `]`), Attachments: [][]byte{{0}}},
			`61-15["bar",` + ph0 + `]`},
		{"binary ack admin", Packet{Type: BinaryAck, Nsp: "/admin", ID: 15, Data: raw(`[` + ph0 + `]`), Attachments: [][]byte{{0}}},
			`61-/admin,15[` + ph0 + `]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			if got := Encode(&p); string(got) != tc.want {
				t.Fatalf("Encode = %q, want %q", got, tc.want)
			}
			// AppendEncode keeps the prefix (the Engine.IO message digit).
			prefix := []byte{'4'}
			if got := AppendEncode(prefix, &p); string(got) != "4"+tc.want {
				t.Fatalf("AppendEncode(\"4\") = %q, want %q", got, "4"+tc.want)
			}
			// Round trip: the encoding decodes to the same packet, with
			// the main namespace normalised to "/".
			got, err := decodeAll(t, tc.want, tc.p.Attachments)
			if err != nil {
				t.Fatalf("decode(Encode) %q: %v", tc.want, err)
			}
			want := tc.p
			if want.Nsp == "" {
				want.Nsp = "/"
			}
			want.nAttach = len(want.Attachments)
			if !samePacket(got, &want) {
				t.Fatalf("round trip %q\n got %s\nwant %s", tc.want, fmtPacket(got), fmtPacket(&want))
			}
		})
	}
}

func TestAppendEncodeReusesCapacity(t *testing.T) {
	buf := make([]byte, 1, 64)
	buf[0] = '4'
	out := AppendEncode(buf, &Packet{Type: Event, Nsp: "/", ID: NoAck, Data: raw(`["a"]`)})
	if string(out) != `42["a"]` {
		t.Fatalf("AppendEncode = %q", out)
	}
	if &out[0] != &buf[0] {
		t.Errorf("AppendEncode reallocated although dst had capacity")
	}
}

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name string
		dst  string
		ev   string
		args []json.RawMessage
		want string
	}{
		{"no args", "", "ping_me", nil, `2["ping_me"]`},
		{"object arg", "", "new_message", []json.RawMessage{raw(`{"id":1,"text":"hi"}`)}, `2["new_message",{"id":1,"text":"hi"}]`},
		{"many args", "", "m", []json.RawMessage{raw(`1`), raw(`"x"`), raw(`null`), raw(`[1,2]`), raw(`true`)}, `2["m",1,"x",null,[1,2],true]`},
		{"engine.io prefix kept", "4", "e", []json.RawMessage{raw(`{}`)}, `42["e",{}]`},
		{"appends after existing frame", "4a\x1e4", "e", nil, "4a\x1e42[\"e\"]"},
		{"empty name", "", "", nil, `2[""]`},
		{"quotes", "", `say "hi"`, nil, `2["say \"hi\""]`},
		{"backslash", "", `a\b`, nil, `2["a\\b"]`},
		{"html characters escaped", "", "<b>&</b>", nil, `2["\u003cb\u003e\u0026\u003c/b\u003e"]`},
		{"less-than only", "", "<", nil, `2["\u003c"]`},
		{"unicode kept as UTF-8", "", "héllo✓😀", nil, `2["héllo✓😀"]`},
		{"line and paragraph separators escaped", "", "\u2028\u2029", nil, `2["\u2028\u2029"]`},
		{"control characters", "", "a\nb\tc\x1ed\x00", nil, `2["a\nb\tc\u001ed\u0000"]`},
		{"invalid UTF-8 replaced", "", "a\xffb", nil, `2["a\ufffdb"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var dst []byte
			if tc.dst != "" {
				dst = []byte(tc.dst)
			}
			got := AppendEvent(dst, tc.ev, tc.args...)
			if string(got) != tc.want {
				t.Fatalf("AppendEvent = %s\nwant          %s", got, tc.want)
			}
			// The frame is a valid EVENT whose name and arguments read back.
			text := got[len(tc.dst):]
			var d Decoder
			p, err := d.AddText(text)
			if err != nil {
				t.Fatalf("AddText(%q): %v", text, err)
			}
			wantName := strings.ToValidUTF8(tc.ev, "\ufffd")
			if p.Type != Event || p.Nsp != "/" || p.ID != NoAck || p.EventName() != wantName {
				t.Fatalf("decoded %s, name %q; want EVENT on / named %q", fmtPacket(p), p.EventName(), wantName)
			}
			args := p.EventArgs()
			if len(args) != len(tc.args) || !slices.EqualFunc(args, tc.args, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("EventArgs = %q, want %q", args, tc.args)
			}
		})
	}
}

func TestEventNameAndArgs(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		bins     [][]byte
		wantName string
		wantArgs []string
	}{
		{"name only", `2["foo"]`, nil, "foo", []string{}},
		{"args", `2["foo",1,{"a":[1,2]},"x",null]`, nil, "foo", []string{`1`, `{"a":[1,2]}`, `"x"`, `null`}},
		{"whitespace", `2[ "foo" , 1 , { "a" : 1 } ]`, nil, "foo", []string{`1`, `{ "a" : 1 }`}},
		{"numeric name", `2[42]`, nil, "42", []string{}},
		{"numeric name with args", `2[42,"x"]`, nil, "42", []string{`"x"`}},
		{"negative float name", `2[-1.5e3]`, nil, "-1.5e3", []string{}},
		{"escaped name", `2["\u003cb\u003e","\u003c"]`, nil, "<b>", []string{`"\u003c"`}},
		{"unicode name", `2["h\u00e9llo✓"]`, nil, "héllo✓", []string{}},
		{"admin with ack", `2/admin,7["foo",true]`, nil, "foo", []string{`true`}},
		{"binary event", `51-["up",{"_placeholder":true,"num":0},2]`, [][]byte{{1}}, "up", []string{`{"_placeholder":true,"num":0}`, `2`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := decodeAll(t, tc.in, tc.bins)
			if err != nil {
				t.Fatalf("decode %q: %v", tc.in, err)
			}
			if got := p.EventName(); got != tc.wantName {
				t.Errorf("EventName = %q, want %q", got, tc.wantName)
			}
			args := p.EventArgs()
			if args == nil || len(args) != len(tc.wantArgs) {
				t.Fatalf("EventArgs = %q (nil %t), want %q", args, args == nil, tc.wantArgs)
			}
			for i := range args {
				if string(args[i]) != tc.wantArgs[i] {
					t.Errorf("EventArgs[%d] = %s, want %s", i, args[i], tc.wantArgs[i])
				}
			}
		})
	}
	// Packets that are not events.
	for _, data := range []string{"", `{}`, `[]`, `[{"a":1}]`, `[true]`, `"foo"`} {
		p := &Packet{Type: Event, Nsp: "/", ID: NoAck}
		if data != "" {
			p.Data = raw(data)
		}
		if got := p.EventName(); got != "" {
			t.Errorf("EventName(%q) = %q, want \"\"", data, got)
		}
		if data != `[]` && data != `[{"a":1}]` && data != `[true]` {
			if got := p.EventArgs(); got != nil {
				t.Errorf("EventArgs(%q) = %q, want nil", data, got)
			}
		}
	}
	if got := (&Packet{Data: raw(`[]`)}).EventArgs(); got != nil {
		t.Errorf("EventArgs([]) = %q, want nil", got)
	}
	if got := (&Packet{Data: raw(`[{"a":1},2]`)}).EventArgs(); len(got) != 1 || string(got[0]) != `2` {
		t.Errorf("EventArgs([{\"a\":1},2]) = %q, want [2]", got)
	}
}

// FuzzDecoder feeds a sequence of messages to one Decoder. The input is split
// on 0x1e like a polling payload; a record starting with 'b' is a binary
// message (the rest of the record is its bytes), any other record is a text
// message. Beyond never panicking it checks the state machine and that every
// completed packet re-encodes to text that decodes to an equal packet.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{
		"0", `0{"token":"x"}`, "0/admin,", "0/custom", "1", "1/admin,", `2["foo"]`, `2/admin,["bar"]`,
		`212["foo"]`, `3/admin,13["bar"]`, `31[]`, `2[42]`, `4{"message":"x"}`,
		"51-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1eb\x01\x02\x03\x04",
		"52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]\x1eb\x01\x1eb\x02",
		"61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]\x1eb",
		"51-[\"a\",{\"_placeholder\":true,\"num\":0}]\x1e2[\"x\"]\x1eb1",
		"b\x00", `2{}`, `2abc["x"]`, `2[]`, `2["disconnect"]`, `1{}`, `0[]`, "4123", "8", "",
		`29007199254740992["a"]`, `511-["a"]`, `51-["a",{"_placeholder":true,"num":1}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		var d Decoder
		for rec := range bytes.SplitSeq(stream, []byte{0x1e}) {
			wasPending := d.Pending()
			if len(rec) > 0 && rec[0] == 'b' {
				bin := rec[1:]
				p, err := d.AddBinary(bin)
				switch {
				case !wasPending:
					if !errors.Is(err, ErrUnexpectedBin) || p != nil || d.Pending() {
						t.Fatalf("AddBinary with none pending = %s, %v", fmtPacket(p), err)
					}
				case err != nil:
					t.Fatalf("AddBinary while pending: %v", err)
				case p == nil:
					if !d.Pending() {
						t.Fatalf("AddBinary returned nothing and is no longer pending")
					}
				default:
					if d.Pending() {
						t.Fatalf("AddBinary completed a packet but is still pending")
					}
					checkPacket(t, p)
				}
				continue
			}
			in := bytes.Clone(rec)
			p, err := d.AddText(rec)
			if !bytes.Equal(in, rec) {
				t.Fatalf("AddText modified its input")
			}
			if wasPending {
				if !errors.Is(err, ErrPendingBinary) || p != nil || !d.Pending() {
					t.Fatalf("AddText(%q) while pending = %s, %v", rec, fmtPacket(p), err)
				}
				continue
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidPacket) && !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("AddText(%q): unexpected error kind %v", rec, err)
				}
				if p != nil || d.Pending() {
					t.Fatalf("AddText(%q) failed (%v) but returned %s / left pending %t", rec, err, fmtPacket(p), d.Pending())
				}
				continue
			}
			if p == nil {
				if !d.Pending() || d.pending.nAttach < 1 || d.pending.nAttach > MaxAttachments {
					t.Fatalf("AddText(%q) returned nothing; pending %t", rec, d.Pending())
				}
				continue
			}
			if d.Pending() {
				t.Fatalf("AddText(%q) returned a packet and is pending", rec)
			}
			checkPacket(t, p)
		}
	})
}

// checkPacket checks the invariants of a completed packet and its round trip.
func checkPacket(t *testing.T, p *Packet) {
	t.Helper()
	if p.Type > BinaryAck {
		t.Fatalf("type %d", p.Type)
	}
	if p.Nsp == "" || p.Nsp[0] != '/' || strings.IndexByte(p.Nsp, ',') >= 0 {
		t.Fatalf("namespace %q", p.Nsp)
	}
	if p.ID < NoAck || p.ID > maxAckID {
		t.Fatalf("ack id %d", p.ID)
	}
	if p.Data != nil && !json.Valid(p.Data) {
		t.Fatalf("invalid JSON data %q", p.Data)
	}
	binary := p.Type == BinaryEvent || p.Type == BinaryAck
	if !binary && len(p.Attachments) > 0 {
		t.Fatalf("non-binary packet with attachments: %s", fmtPacket(p))
	}
	if len(p.Attachments) > MaxAttachments || len(p.Attachments) != p.nAttach {
		t.Fatalf("attachments %d, announced %d", len(p.Attachments), p.nAttach)
	}
	switch p.Type {
	case Event, BinaryEvent:
		name, err := eventName(p.Data)
		if err != nil || IsReserved(name) || name != p.EventName() {
			t.Fatalf("event %s: name %q, %v", fmtPacket(p), name, err)
		}
		if p.EventArgs() == nil {
			t.Fatalf("event %s: EventArgs nil", fmtPacket(p))
		}
	case Disconnect:
		if p.Data != nil {
			t.Fatalf("disconnect with data %q", p.Data)
		}
	}
	// Every placeholder must name an attachment that arrived.
	if binary {
		if err := walkPlaceholders(p.Data, len(p.Attachments)); err != nil {
			t.Fatalf("%s: %v", fmtPacket(p), err)
		}
	}

	enc := Encode(p)
	if got := AppendEncode([]byte("4"), p); !bytes.Equal(got[1:], enc) || got[0] != '4' {
		t.Fatalf("AppendEncode(4) = %q, Encode = %q", got, enc)
	}
	var d Decoder
	q, err := d.AddText(enc)
	if err != nil {
		t.Fatalf("re-decoding %q (from %s): %v", enc, fmtPacket(p), err)
	}
	for _, a := range p.Attachments {
		if q != nil {
			t.Fatalf("re-decoding %q completed before its attachments", enc)
		}
		if q, err = d.AddBinary(a); err != nil {
			t.Fatalf("re-decoding %q: AddBinary: %v", enc, err)
		}
	}
	if !samePacket(p, q) {
		t.Fatalf("round trip via %q\n got %s\nwant %s", enc, fmtPacket(q), fmtPacket(p))
	}
	if enc2 := Encode(q); !bytes.Equal(enc2, enc) {
		t.Fatalf("Encode not stable: %q then %q", enc, enc2)
	}
}

// walkPlaceholders is an independent check of placeholder objects: num must
// be an integer in [0, n).
func walkPlaceholders(data []byte, n int) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
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
			if x["_placeholder"] == true {
				num, ok := x["num"].(json.Number)
				if !ok {
					return fmt.Errorf("placeholder without numeric num: %v", x)
				}
				// Any integral JSON number is an index (0, 0.0, 1e0).
				f, err := num.Float64()
				if err != nil || f != math.Trunc(f) || f < 0 || f >= float64(n) {
					return fmt.Errorf("placeholder num %s out of [0,%d)", num, n)
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
