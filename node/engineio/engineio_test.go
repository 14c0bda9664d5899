package engineio

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func packetsEqual(a, b []Packet) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Type != b[i].Type || a[i].Binary != b[i].Binary || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func fmtPackets(ps []Packet) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, p := range ps {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "{Type:%d Binary:%t Data:%q}", p.Type, p.Binary, p.Data)
	}
	sb.WriteByte(']')
	return sb.String()
}

func TestTypeDigits(t *testing.T) {
	// The wire digits are fixed by the spec (EIO v4 "Protocol").
	want := map[Type]byte{Open: '0', Close: '1', Ping: '2', Pong: '3', Message: '4', Upgrade: '5', Noop: '6'}
	for typ, digit := range want {
		if got := byte('0' + typ); got != digit {
			t.Errorf("type %d: digit %q, want %q", typ, got, digit)
		}
	}
	if Protocol != "4" {
		t.Errorf("Protocol = %q, want %q", Protocol, "4")
	}
	if Separator != 0x1e {
		t.Errorf("Separator = %#x, want 0x1e", Separator)
	}
}

func TestEncodeOpen(t *testing.T) {
	tests := []struct {
		name string
		info OpenInfo
		want string
	}{
		{
			name: "spec example polling session",
			info: OpenInfo{SID: "lv_VI97HAXpY6yYWAAAC", Upgrades: []string{"websocket"}, PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1000000},
			want: `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		},
		{
			name: "websocket session nil upgrades is []",
			info: OpenInfo{SID: "abcdefghijklmnopqrst", PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1000000},
			want: `0{"sid":"abcdefghijklmnopqrst","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		},
		{
			name: "empty non-nil upgrades",
			info: OpenInfo{SID: "s", Upgrades: []string{}, PingInterval: 1, PingTimeout: 2, MaxPayload: 3},
			want: `0{"sid":"s","upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3}`,
		},
		{
			name: "two upgrades, zero values",
			info: OpenInfo{Upgrades: []string{"websocket", "webtransport"}},
			want: `0{"sid":"","upgrades":["websocket","webtransport"],"pingInterval":0,"pingTimeout":0,"maxPayload":0}`,
		},
		{
			name: "sid with URL-safe characters",
			info: OpenInfo{SID: "a-b_c", Upgrades: nil, PingInterval: 25000, PingTimeout: 20000, MaxPayload: 100000000},
			want: `0{"sid":"a-b_c","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000000}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EncodeOpen(tc.info)
			if string(got) != tc.want {
				t.Fatalf("EncodeOpen = %s\nwant         %s", got, tc.want)
			}
		})
	}
}

// TestEncodeOpenKeys checks the key set and order independently of the
// exact-bytes table: the conformance suite asserts exactly these five keys.
func TestEncodeOpenKeys(t *testing.T) {
	for _, ups := range [][]string{nil, {}, {"websocket"}} {
		b := EncodeOpen(OpenInfo{SID: "x", Upgrades: ups, PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1e6})
		if b[0] != '0' {
			t.Fatalf("first byte %q, want '0'", b[0])
		}
		dec := json.NewDecoder(bytes.NewReader(b[1:]))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("open body does not start with an object: %v %v", tok, err)
		}
		var keys []string
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, tok.(string))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if tok == "upgrades" && v[0] != '[' {
				t.Errorf("upgrades = %s, want a JSON array (never null)", v)
			}
		}
		want := []string{"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
		if !slices.Equal(keys, want) {
			t.Errorf("upgrades %v: keys %v, want %v", ups, keys, want)
		}
	}
}

func TestEncodeOpenDoesNotMutate(t *testing.T) {
	info := OpenInfo{SID: "x"}
	_ = EncodeOpen(info)
	if info.Upgrades != nil {
		t.Errorf("EncodeOpen changed the caller's Upgrades to %v", info.Upgrades)
	}
}

func TestAppendText(t *testing.T) {
	tests := []struct {
		dst  string
		typ  Type
		data string
		want string
	}{
		{"", Open, `{"sid":"x"}`, `0{"sid":"x"}`},
		{"", Close, "", "1"},
		{"", Ping, "", "2"},
		{"", Ping, "probe", "2probe"},
		{"", Pong, "", "3"},
		{"", Pong, "probe", "3probe"},
		{"", Message, "hello", "4hello"},
		{"", Message, `2["foo"]`, `42["foo"]`},
		{"", Upgrade, "", "5"},
		{"", Noop, "", "6"},
		{"4a\x1e", Message, "b", "4a\x1e4b"},
		{"prefix", Message, "", "prefix4"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q+%d+%q", tc.dst, tc.typ, tc.data), func(t *testing.T) {
			var dst []byte
			if tc.dst != "" {
				dst = []byte(tc.dst)
			}
			var data []byte
			if tc.data != "" {
				data = []byte(tc.data)
			}
			got := AppendText(dst, tc.typ, data)
			if string(got) != tc.want {
				t.Fatalf("AppendText = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecodeText(t *testing.T) {
	tests := []struct {
		in       string
		wantType Type
		wantData string
		wantErr  bool
	}{
		{in: `0{"sid":"x"}`, wantType: Open, wantData: `{"sid":"x"}`},
		{in: "0", wantType: Open},
		{in: "1", wantType: Close},
		{in: "2", wantType: Ping},
		{in: "2probe", wantType: Ping, wantData: "probe"},
		{in: "3", wantType: Pong},
		{in: "3probe", wantType: Pong, wantData: "probe"},
		{in: "4", wantType: Message},
		{in: "4hello", wantType: Message, wantData: "hello"},
		{in: `42["foo"]`, wantType: Message, wantData: `2["foo"]`},
		{in: "4\x1e", wantType: Message, wantData: "\x1e"},
		{in: "4héllo", wantType: Message, wantData: "héllo"},
		{in: "5", wantType: Upgrade},
		{in: "6", wantType: Noop},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true}, // EIO-SPEC test "closes the session upon invalid packet format"
		{in: "7", wantErr: true},
		{in: "8", wantErr: true},
		{in: "9hello", wantErr: true},
		{in: "/", wantErr: true}, // '0'-1
		{in: "b", wantErr: true}, // binary marker is only valid in a polling payload
		{in: "bAQIDBA==", wantErr: true},
		{in: " 4", wantErr: true},
		{in: "\x004", wantErr: true},
		{in: "\x1e", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			p, err := DecodeText([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, ErrParse) {
					t.Fatalf("DecodeText(%q) err = %v, want ErrParse", tc.in, err)
				}
				if p.Type != 0 || p.Data != nil || p.Binary {
					t.Errorf("DecodeText(%q) returned non-zero packet %+v with error", tc.in, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeText(%q) err = %v", tc.in, err)
			}
			if p.Type != tc.wantType || string(p.Data) != tc.wantData || p.Binary {
				t.Fatalf("DecodeText(%q) = {Type:%d Data:%q Binary:%t}, want {Type:%d Data:%q Binary:false}",
					tc.in, p.Type, p.Data, p.Binary, tc.wantType, tc.wantData)
			}
			// The text form is reproduced exactly.
			if got := AppendText(nil, p.Type, p.Data); string(got) != tc.in {
				t.Errorf("AppendText(DecodeText(%q)) = %q", tc.in, got)
			}
		})
	}
}

func TestEncodePayload(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tests := []struct {
		name string
		pkts []Packet
		want string
	}{
		{name: "nil", pkts: nil, want: ""},
		{name: "single ping", pkts: []Packet{{Type: Ping}}, want: "2"},
		{name: "spec example", pkts: []Packet{
			{Type: Message, Data: []byte("hello")}, {Type: Ping}, {Type: Message, Data: []byte("world")},
		}, want: "4hello\x1e2\x1e4world"},
		{name: "binary spec example", pkts: []Packet{{Type: Message, Data: []byte{1, 2, 3, 4}, Binary: true}}, want: "bAQIDBA=="},
		{name: "binary empty", pkts: []Packet{{Type: Message, Binary: true}}, want: "b"},
		{name: "binary ignores Type", pkts: []Packet{{Type: Ping, Data: []byte{0xff}, Binary: true}}, want: "b/w=="},
		{name: "binary uses standard alphabet with padding", pkts: []Packet{{Type: Message, Data: []byte{0xfb, 0xff}, Binary: true}}, want: "b+/8="},
		{name: "binary event with attachment", pkts: []Packet{
			{Type: Message, Data: []byte(`51-["baz",{"_placeholder":true,"num":0}]`)},
			{Type: Message, Data: []byte{1, 2, 3, 4}, Binary: true},
		}, want: "451-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA=="},
		{name: "two binaries back to back", pkts: []Packet{
			{Type: Message, Data: []byte{0}, Binary: true},
			{Type: Message, Data: []byte{1, 2}, Binary: true},
		}, want: "bAA==\x1ebAQI="},
		{name: "empty message and noop", pkts: []Packet{{Type: Message}, {Type: Noop}}, want: "4\x1e6"},
		{name: "close", pkts: []Packet{{Type: Close}}, want: "1"},
		{name: "256 bytes binary", pkts: []Packet{{Type: Message, Data: all, Binary: true}}, want: "b" + base64.StdEncoding.EncodeToString(all)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EncodePayload(tc.pkts)
			if string(got) != tc.want {
				t.Fatalf("EncodePayload = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecodePayload(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    []Packet
		wantErr bool
	}{
		{name: "spec example", body: "4hello\x1e2\x1e4world", want: []Packet{
			{Type: Message, Data: []byte("hello")}, {Type: Ping}, {Type: Message, Data: []byte("world")},
		}},
		{name: "single message", body: `42["foo"]`, want: []Packet{{Type: Message, Data: []byte(`2["foo"]`)}}},
		{name: "close from client", body: "1", want: []Packet{{Type: Close}}},
		{name: "pong", body: "3", want: []Packet{{Type: Pong}}},
		{name: "binary", body: "bAQIDBA==", want: []Packet{{Type: Message, Data: []byte{1, 2, 3, 4}, Binary: true}}},
		{name: "binary empty", body: "b", want: []Packet{{Type: Message, Data: []byte{}, Binary: true}}},
		{name: "binary event then attachment", body: "451-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==", want: []Packet{
			{Type: Message, Data: []byte(`51-["baz",{"_placeholder":true,"num":0}]`)},
			{Type: Message, Data: []byte{1, 2, 3, 4}, Binary: true},
		}},
		{name: "two attachments", body: "452-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]\x1ebAA==\x1ebAQI=", want: []Packet{
			{Type: Message, Data: []byte(`52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)},
			{Type: Message, Data: []byte{0}, Binary: true},
			{Type: Message, Data: []byte{1, 2}, Binary: true},
		}},
		{name: "every type", body: "0\x1e1\x1e2\x1e3\x1e4\x1e5\x1e6", want: []Packet{
			{Type: Open}, {Type: Close}, {Type: Ping}, {Type: Pong}, {Type: Message}, {Type: Upgrade}, {Type: Noop},
		}},
		{name: "empty body", body: "", wantErr: true},
		{name: "unknown type", body: "abc", wantErr: true},
		{name: "unknown type 7", body: "7", wantErr: true},
		{name: "unknown type after good one", body: "4hello\x1e7", wantErr: true},
		{name: "only separator", body: "\x1e", wantErr: true},
		{name: "trailing separator", body: "4a\x1e", wantErr: true},
		{name: "leading separator", body: "\x1e4a", wantErr: true},
		{name: "empty record", body: "4a\x1e\x1e4b", wantErr: true},
		{name: "malformed base64", body: "b!!!!", wantErr: true},
		{name: "base64 missing padding", body: "bAQIDBA", wantErr: true},
		{name: "base64 wrong padding", body: "bAQIDBA=", wantErr: true},
		{name: "base64 URL alphabet", body: "b-_8=", wantErr: true},
		{name: "malformed base64 after text", body: "4a\x1eb=", wantErr: true},
		{name: "binary marker uppercase", body: "BAQIDBA==", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodePayload([]byte(tc.body))
			if tc.wantErr {
				if !errors.Is(err, ErrParse) {
					t.Fatalf("DecodePayload(%q) err = %v, want ErrParse", tc.body, err)
				}
				if got != nil {
					t.Errorf("DecodePayload(%q) returned packets %s with an error", tc.body, fmtPackets(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePayload(%q) err = %v", tc.body, err)
			}
			if !packetsEqual(got, tc.want) {
				t.Fatalf("DecodePayload(%q)\n got %s\nwant %s", tc.body, fmtPackets(got), fmtPackets(tc.want))
			}
			// Canonical bodies re-encode to the same bytes.
			if enc := EncodePayload(got); string(enc) != tc.body {
				t.Errorf("EncodePayload(DecodePayload(%q)) = %q", tc.body, enc)
			}
		})
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0x00, 0x1e, 0xff, 'b'}, 1000)
	tests := [][]Packet{
		{{Type: Message, Data: []byte("x")}},
		{{Type: Message, Data: big, Binary: true}},
		{{Type: Message, Data: []byte{0x1e}, Binary: true}, {Type: Message, Data: []byte{0x1e, 0x1e}, Binary: true}},
		{{Type: Ping, Data: []byte("probe")}, {Type: Noop}, {Type: Message, Data: []byte(`2["a","\u001e"]`)}},
		{{Type: Message, Data: []byte{}, Binary: true}, {Type: Close}},
	}
	for i, pkts := range tests {
		enc := EncodePayload(pkts)
		got, err := DecodePayload(enc)
		if err != nil {
			t.Fatalf("case %d: DecodePayload(EncodePayload) err = %v (payload %q)", i, err, enc)
		}
		if !packetsEqual(got, pkts) {
			t.Fatalf("case %d: round trip\n got %s\nwant %s", i, fmtPackets(got), fmtPackets(pkts))
		}
	}
}

func TestNewID(t *testing.T) {
	const n = 2000
	seen := make(map[string]bool, n)
	for range n {
		id := NewID()
		if len(id) != 20 {
			t.Fatalf("NewID() = %q, length %d, want 20", id, len(id))
		}
		for _, c := range id {
			ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				t.Fatalf("NewID() = %q contains %q, outside the URL-safe alphabet", id, c)
			}
		}
		raw, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(raw) != 15 {
			t.Fatalf("NewID() = %q is not 15 bytes of raw URL base64 (%d bytes, %v)", id, len(raw), err)
		}
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
}

// FuzzDecodeText: DecodeText never panics, fails only with ErrParse on a
// bad type byte, and a decoded packet re-encodes to exactly its input.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{
		"", "0", `0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		"1", "2", "2probe", "3", "3probe", "4", "4hello", `42["foo"]`, "5", "6", "7", "abc", "b", "bAQIDBA==", "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		p, err := DecodeText(b)
		if !bytes.Equal(in, b) {
			t.Fatalf("DecodeText modified its input")
		}
		validType := len(b) > 0 && b[0] >= '0' && b[0] <= '6'
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("DecodeText(%q) err = %v, want ErrParse", b, err)
			}
			if validType {
				t.Fatalf("DecodeText(%q) rejected a packet with a valid type digit", b)
			}
			return
		}
		if !validType {
			t.Fatalf("DecodeText(%q) accepted an invalid type byte", b)
		}
		if p.Type > Noop || p.Binary {
			t.Fatalf("DecodeText(%q) = %+v", b, p)
		}
		if got := AppendText(nil, p.Type, p.Data); !bytes.Equal(got, b) {
			t.Fatalf("AppendText(DecodeText(%q)) = %q", b, got)
		}
		// A single text packet is also a valid one-record polling payload
		// unless its data holds the separator.
		if bytes.IndexByte(b, Separator) < 0 {
			pkts, err := DecodePayload(b)
			if err != nil || len(pkts) != 1 || !packetsEqual(pkts, []Packet{p}) {
				t.Fatalf("DecodePayload(%q) = %s, %v; want [%+v]", b, fmtPackets(pkts), err, p)
			}
		}
	})
}

// FuzzDecodePayload: DecodePayload never panics, fails only with ErrParse,
// yields one packet per record, and re-encoding decodes to equal packets.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		"", "4hello\x1e2\x1e4world", "bAQIDBA==", "b", "451-[\"baz\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==",
		"\x1e", "4a\x1e", "b!!!", "bAQ\nIDBA==", "bAR==", "abc", "1", "3\x1e6",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in := bytes.Clone(body)
		pkts, err := DecodePayload(body)
		if !bytes.Equal(in, body) {
			t.Fatalf("DecodePayload modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrParse) {
				t.Fatalf("DecodePayload(%q) err = %v, want ErrParse", body, err)
			}
			if pkts != nil {
				t.Fatalf("DecodePayload(%q) returned packets with an error", body)
			}
			return
		}
		if want := bytes.Count(body, []byte{Separator}) + 1; len(pkts) != want {
			t.Fatalf("DecodePayload(%q) = %d packets, want %d", body, len(pkts), want)
		}
		hasBinary := false
		for _, p := range pkts {
			if p.Type > Noop {
				t.Fatalf("DecodePayload(%q): packet type %d", body, p.Type)
			}
			if p.Binary {
				hasBinary = true
				if p.Type != Message {
					t.Fatalf("DecodePayload(%q): binary packet of type %d", body, p.Type)
				}
			}
		}
		enc := EncodePayload(pkts)
		if !hasBinary && !bytes.Equal(enc, body) {
			// Text-only payloads have one encoding.
			t.Fatalf("EncodePayload(DecodePayload(%q)) = %q", body, enc)
		}
		again, err := DecodePayload(enc)
		if err != nil {
			t.Fatalf("DecodePayload(EncodePayload(DecodePayload(%q))) = %v (re-encoded %q)", body, err, enc)
		}
		if !packetsEqual(again, pkts) {
			t.Fatalf("payload %q round trip\n got %s\nwant %s", body, fmtPackets(again), fmtPackets(pkts))
		}
		// The re-encoding is canonical: a second pass is byte-identical.
		if enc2 := EncodePayload(again); !bytes.Equal(enc2, enc) {
			t.Fatalf("EncodePayload not stable: %q then %q", enc, enc2)
		}
	})
}
