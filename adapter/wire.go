package adapter

// The @socket.io/redis-adapter v8 classic wire format: msgpack broadcasts in
// notepack.io's dialect, JSON requests. Event arguments live as JSON inside
// hubnode, so broadcasts are transcoded JSON <-> msgpack keeping key order.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxDepth bounds the nesting of arrays and objects inside one event argument.
const maxDepth = 64

var errMalformed = errors.New("adapter: malformed msgpack")

// relayFlag is the broadcast flag that carries Message.Relay.
const relayFlag = "hubnodeRelay"

// EncodeBroadcast encodes msg as the classic adapter's
// [uid, {type, data, nsp}, {rooms, except, flags}], byte for byte as notepack.io.
func EncodeBroadcast(uid string, msg *Message) ([]byte, error) {
	if len(msg.Data) == 0 {
		return nil, errors.New("adapter: broadcast without an event name")
	}
	nsp := msg.Nsp
	if nsp == "" {
		nsp = "/"
	}
	size := 64 + len(uid) + len(nsp)
	for _, d := range msg.Data {
		size += len(d)
	}
	for _, r := range msg.Rooms {
		size += len(r) + 2
	}
	buf := bytes.NewBuffer(make([]byte, 0, size)) // the result: one allocation, usually
	e := msgpack.GetEncoder()
	defer msgpack.PutEncoder(e)
	e.Reset(buf)
	e.UseCompactInts(true)
	// Writes to a bytes.Buffer cannot fail.
	_ = errors.Join(e.EncodeArrayLen(3), e.EncodeString(uid), e.EncodeMapLen(3),
		e.EncodeString("type"), e.EncodeInt(2), e.EncodeString("data"), e.EncodeArrayLen(len(msg.Data)))
	for i, raw := range msg.Data {
		if err := encodeJSON(e, raw, msg.Attachments); err != nil {
			return nil, fmt.Errorf("adapter: data[%d]: %w", i, err)
		}
	}
	_ = errors.Join(e.EncodeString("nsp"), e.EncodeString(nsp), e.EncodeMapLen(3),
		e.EncodeString("rooms"), encodeStrings(e, msg.Rooms), e.EncodeString("except"),
		encodeStrings(e, msg.Except), e.EncodeString("flags"))
	if msg.Relay == "" {
		_ = e.EncodeMapLen(0)
	} else { // Node.js adapters ignore flags they do not know.
		_ = errors.Join(e.EncodeMapLen(1), e.EncodeString(relayFlag), e.EncodeString(msg.Relay))
	}
	return buf.Bytes(), nil
}

func encodeStrings(e *msgpack.Encoder, ss []string) error {
	err := e.EncodeArrayLen(len(ss))
	for _, s := range ss {
		err = errors.Join(err, e.EncodeString(s))
	}
	return err
}

// jtok is one JSON token; n counts the members of '[' and '{'.
type jtok struct {
	kind byte // '[', '{', 's' (string or key), 'n' (number), 't', 'f', 'z' (null)
	s    string
	n    int
}

// encodeJSON transcodes one JSON value; placeholders become bin.
func encodeJSON(e *msgpack.Encoder, raw []byte, att [][]byte) error {
	if !json.Valid(raw) {
		return errors.New("invalid JSON")
	}
	var small [32]jtok
	tape, err := tokenize(raw, small[:0])
	if err != nil {
		return err
	}
	_, err = emitTape(e, tape, 0, 0, att)
	return err
}

// tokenize turns valid JSON into a tape of tokens. It replaced
// encoding/json's Decoder.Token, which allocated per token (about 70
// allocations and 6 KB for a small event); plain strings and numbers point
// into raw, which outlives the tape.
func tokenize(raw []byte, tape []jtok) ([]jtok, error) {
	var small [16]int
	open := small[:0] // containers being read
	for i := 0; i < len(raw); {
		c := raw[i]
		switch c {
		case ' ', '\t', '\n', '\r', ',', ':':
			i++
			continue
		case ']', '}':
			if c == '}' {
				tape[open[len(open)-1]].n /= 2 // keys were counted too
			}
			open = open[:len(open)-1]
			i++
			continue
		}
		if len(open) > 0 {
			tape[open[len(open)-1]].n++
		}
		tok := jtok{kind: 'z'}
		switch c {
		case '[', '{':
			tok.kind = c
			open = append(open, len(tape))
			i++
		case '"':
			j, escaped, high := i+1, false, false
			for ; raw[j] != '"'; j++ {
				if raw[j] == '\\' {
					escaped = true
					j++
				} else if raw[j] >= utf8.RuneSelf {
					high = true
				}
			}
			tok.kind = 's'
			if !escaped && (!high || utf8.Valid(raw[i+1:j])) {
				tok.s = unsafe.String(unsafe.SliceData(raw[i+1:]), j-i-1)
			} else {
				// Unescaping, and invalid UTF-8 to U+FFFD, as encoding/json does.
				var s string
				if err := json.Unmarshal(raw[i:j+1], &s); err != nil {
					return nil, err
				}
				tok.s = s
			}
			i = j + 1
		case 't':
			tok.kind = 't'
			i += len("true")
		case 'f':
			tok.kind = 'f'
			i += len("false")
		case 'n':
			i += len("null")
		default: // a number
			j := i + 1
			for j < len(raw) && (raw[j] >= '0' && raw[j] <= '9' || raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E' || raw[j] == '+' || raw[j] == '-') {
				j++
			}
			tok = jtok{kind: 'n', s: unsafe.String(&raw[i], j-i)}
			i = j
		}
		tape = append(tape, tok)
	}
	return tape, nil
}

// emitTape writes the value at tape[i] and returns the index after it.
func emitTape(e *msgpack.Encoder, tape []jtok, i, depth int, att [][]byte) (int, error) {
	t := tape[i]
	var err error
	switch t.kind {
	case 'z':
		return i + 1, e.EncodeNil()
	case 't', 'f':
		return i + 1, e.EncodeBool(t.kind == 't')
	case 's':
		return i + 1, e.EncodeString(t.s)
	case 'n':
		return i + 1, encodeNumber(e, t.s)
	case '{':
		if b, ok := placeholder(tape, i, att); ok {
			return i + 5, e.EncodeBytes(append([]byte{}, b...)) // a nil slice would encode as nil
		}
		err = e.EncodeMapLen(t.n)
	default:
		err = e.EncodeArrayLen(t.n)
	}
	if depth >= maxDepth {
		return 0, errors.New("nesting too deep")
	}
	j := i + 1
	for k := 0; k < t.n && err == nil; k++ {
		if t.kind == '{' {
			err = e.EncodeString(tape[j].s)
			j++
		}
		if err == nil {
			j, err = emitTape(e, tape, j, depth+1, att)
		}
	}
	return j, err
}

// placeholder returns the attachment that tape[i] stands for when it is
// {"_placeholder":true,"num":n}, keys in any order.
func placeholder(tape []jtok, i int, att [][]byte) ([]byte, bool) {
	if tape[i].n != 2 || i+4 >= len(tape) {
		return nil, false
	}
	num, flag := -1, false
	for _, k := range []int{i + 1, i + 3} {
		if key, v := tape[k].s, tape[k+1]; key == "_placeholder" {
			flag = v.kind == 't'
		} else if n, err := strconv.Atoi(v.s); key == "num" && v.kind == 'n' && err == nil {
			num = n
		}
	}
	if !flag || num < 0 || num >= len(att) {
		return nil, false
	}
	return att[num], true
}

// encodeNumber writes integral numbers as the most compact int, like
// notepack, and the rest as float64.
func encodeNumber(e *msgpack.Encoder, s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return e.EncodeInt(n)
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return e.EncodeUint(n)
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return err
	case f != math.Trunc(f):
	case f >= -0x1p63 && f < 0x1p63:
		return e.EncodeInt(int64(f))
	case f >= 0 && f < 0x1p64:
		return e.EncodeUint(uint64(f))
	}
	return e.EncodeFloat64(f)
}

// DecodeBroadcast decodes a classic adapter or emitter broadcast. Each data
// element becomes the JSON a Node receiver would send to browsers, binaries
// moved to msg.Attachments. Empty Rooms, Except and Attachments are nil.
func DecodeBroadcast(b []byte) (uid string, msg *Message, err error) {
	x := decoders.Get().(*mpDecoder)
	defer x.release()
	x.r.Reset(b)
	x.d.Reset(&x.r)
	if n, err := x.arrayLen(); err != nil || n != 3 {
		return "", nil, errors.Join(errors.New("adapter: broadcast is not a 3-element array"), err)
	}
	msg = &Message{Nsp: "/"}
	if uid, err = x.str(); err == nil {
		if err = x.packet(msg); err == nil {
			err = x.opts(msg)
		}
	}
	if err == nil && x.r.Len() != 0 {
		err = fmt.Errorf("adapter: %d trailing bytes", x.r.Len())
	}
	if err != nil {
		return "", nil, err
	}
	msg.Attachments = x.att
	return uid, msg, nil
}

// decodeBroadcastString decodes a payload as go-redis hands it over without
// copying it: the decoder only reads its input and keeps none of it (every
// string, argument and attachment it returns is a copy; FuzzDecodeBroadcast
// checks the results against the input's re-encoding).
func decodeBroadcastString(s string) (string, *Message, error) {
	return DecodeBroadcast(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// mpDecoder is pooled: a node decodes every broadcast it receives on one
// goroutine, and per-call readers, decoders and key strings were most of
// the allocations per delivery.
type mpDecoder struct {
	d       *msgpack.Decoder
	r       bytes.Reader // what d reads, for bounds checks
	att     [][]byte
	scratch []byte // map keys and strings on their way into JSON
}

var decoders = sync.Pool{New: func() any { return &mpDecoder{d: msgpack.NewDecoder(nil)} }}

func (x *mpDecoder) release() {
	x.att = nil
	x.r.Reset(nil)
	x.d.Reset(&x.r)
	if cap(x.scratch) > 64<<10 {
		x.scratch = nil
	}
	decoders.Put(x)
}

func (x *mpDecoder) packet(msg *Message) error {
	typ := -1.0
	err := x.eachKey(func(k []byte) (err error) {
		switch string(k) {
		case "type":
			typ, err = x.d.DecodeFloat64()
		case "nsp":
			if !x.isNil() {
				msg.Nsp, err = x.str()
			}
		case "data":
			if msg.Data != nil {
				return errors.New("adapter: duplicate packet data")
			}
			msg.Data, err = x.data()
		case "id":
			if out, undef, err := x.value(nil, 0); err != nil || !undef && string(out) != "null" {
				return errors.Join(errors.New("adapter: ack broadcasts (packet.id) are not supported across nodes"), err)
			}
		default:
			err = x.skip()
		}
		return err
	})
	switch {
	case err != nil:
		return err
	case typ != 2 && typ != 5:
		return fmt.Errorf("adapter: packet type %v is not EVENT or BINARY_EVENT", typ)
	case len(msg.Data) == 0 || msg.Data[0][0] != '"':
		return errors.New("adapter: packet data has no event name")
	}
	return nil
}

func (x *mpDecoder) opts(msg *Message) error {
	if x.isNil() {
		return nil
	}
	return x.eachKey(func(k []byte) (err error) {
		switch string(k) {
		case "rooms":
			msg.Rooms, err = x.rooms()
		case "except":
			msg.Except, err = x.rooms()
		case "flags":
			if c, _ := x.d.PeekCode(); !isMap(c) {
				err = x.skip()
			} else {
				err = x.eachKey(func(k []byte) (err error) {
					if string(k) == relayFlag {
						msg.Relay, err = x.str()
						return err
					}
					return x.skip()
				})
			}
		default:
			err = x.skip()
		}
		return err
	})
}

// data decodes the packet's arguments into one buffer sized for the
// usual case, each argument a capped slice of it.
func (x *mpDecoder) data() ([]json.RawMessage, error) {
	n, err := x.arrayLen()
	if err != nil {
		return nil, err
	}
	data := make([]json.RawMessage, 0, n)
	// JSON is usually at most 1.5 times its msgpack; the rest of the
	// input (the options) is small.
	buf := make([]byte, 0, x.r.Len()+x.r.Len()/2+16)
	for range n {
		start := len(buf)
		var undef bool
		if buf, undef, err = x.value(buf, 0); err != nil {
			return nil, err
		}
		if undef {
			buf = append(buf, "null"...)
		}
		// Earlier arguments keep their bytes if buf moves on growing.
		data = append(data, buf[start:len(buf):len(buf)])
	}
	return data, nil
}

func (x *mpDecoder) rooms() (rooms []string, err error) {
	if x.isNil() {
		return nil, nil
	}
	err = x.eachElem(func(int) error {
		s, err := x.str()
		rooms = append(rooms, s)
		return err
	})
	return rooms, err
}

// isNil consumes a nil if one comes next.
func (x *mpDecoder) isNil() bool {
	c, err := x.d.PeekCode()
	return err == nil && c == msgpcode.Nil && x.d.DecodeNil() == nil
}

func isArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

func isMap(c byte) bool { return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32 }

// arrayLen reads an array header, refusing lengths the input cannot hold.
func (x *mpDecoder) arrayLen() (int, error) {
	if c, err := x.d.PeekCode(); err != nil || !isArray(c) {
		return 0, errors.Join(errMalformed, err)
	}
	n, err := x.d.DecodeArrayLen()
	if err != nil || n > x.r.Len() {
		return 0, errors.Join(errMalformed, err)
	}
	return n, nil
}

func (x *mpDecoder) eachElem(fn func(i int) error) error {
	n, err := x.arrayLen()
	for i := 0; i < n && err == nil; i++ {
		err = fn(i)
	}
	return err
}

// eachKey reads a map, calling fn with each key to read the value. The key
// is only valid until fn reads further.
func (x *mpDecoder) eachKey(fn func(k []byte) error) error {
	if c, err := x.d.PeekCode(); err != nil || !isMap(c) {
		return errors.Join(errMalformed, err)
	}
	n, err := x.d.DecodeMapLen()
	if err != nil || n > x.r.Len()/2 {
		return errors.Join(errMalformed, err)
	}
	for i := 0; i < n && err == nil; i++ {
		var k []byte
		if k, err = x.key(); err == nil {
			err = fn(k)
		}
	}
	return err
}

// bytes reads a str or bin payload into a slice of its own (never nil).
func (x *mpDecoder) bytes() ([]byte, error) {
	b, err := x.scratchBytes()
	return append([]byte{}, b...), err
}

// scratchBytes reads a str or bin payload into the scratch buffer, valid
// until the next read into it.
func (x *mpDecoder) scratchBytes() ([]byte, error) {
	n, err := x.d.DecodeBytesLen()
	if err != nil || n < 0 || n > x.r.Len() {
		return nil, errors.Join(errMalformed, err)
	}
	if cap(x.scratch) < n {
		x.scratch = make([]byte, n, max(n, 2*cap(x.scratch)))
	}
	x.scratch = x.scratch[:n]
	return x.scratch, x.d.ReadFull(x.scratch)
}

func (x *mpDecoder) str() (string, error) {
	if c, err := x.d.PeekCode(); err != nil || !msgpcode.IsString(c) {
		return "", errors.Join(errors.New("adapter: expected a msgpack string"), err)
	}
	b, err := x.scratchBytes()
	return string(b), err
}

// skip reads and drops one value.
func (x *mpDecoder) skip() error {
	n := len(x.att)
	_, _, err := x.value(nil, 0)
	x.att = x.att[:n]
	return err
}

// key reads a map key and stringifies it as a JS object key, valid until
// the next read.
func (x *mpDecoder) key() ([]byte, error) {
	if c, err := x.d.PeekCode(); err == nil && (msgpcode.IsString(c) || msgpcode.IsBin(c)) {
		return x.scratchBytes()
	}
	out, undef, err := x.value(nil, maxDepth) // maxDepth refuses containers
	switch {
	case undef:
		return []byte("undefined"), nil
	case err == nil && (out[0] == '"' || out[0] == '{'):
		return nil, errors.New("adapter: unsupported msgpack map key")
	}
	return out, err
}

// value appends the JSON of the next msgpack value to out; undef reports a
// JS undefined, for which nothing is appended.
func (x *mpDecoder) value(out []byte, depth int) (_ []byte, undef bool, err error) {
	c, err := x.d.PeekCode()
	switch {
	case err != nil:
	case c == msgpcode.Nil:
		err = x.d.DecodeNil()
		out = append(out, "null"...)
	case c == msgpcode.False || c == msgpcode.True:
		_, err = x.d.DecodeBool()
		out = strconv.AppendBool(out, c == msgpcode.True)
	case c == msgpcode.Uint64:
		var v uint64
		v, err = x.d.DecodeUint64()
		out = strconv.AppendUint(out, v, 10)
	case msgpcode.IsFixedNum(c) || c >= msgpcode.Uint8 && c <= msgpcode.Int64:
		var v int64
		v, err = x.d.DecodeInt64()
		out = strconv.AppendInt(out, v, 10)
	case c == msgpcode.Float || c == msgpcode.Double:
		var f float64
		f, err = x.d.DecodeFloat64()
		out = appendJSNumber(out, f)
	case msgpcode.IsBin(c): // kept as an attachment: its own bytes
		var b []byte
		b, err = x.bytes()
		out = x.attach(out, b)
	case msgpcode.IsString(c):
		var b []byte
		b, err = x.scratchBytes()
		out = appendJSONString(out, b)
	case msgpcode.IsExt(c):
		return x.ext(out, c)
	case depth >= maxDepth:
		err = errors.New("adapter: msgpack nesting too deep")
	case isArray(c):
		out = append(out, '[')
		err = x.eachElem(func(i int) (err error) {
			if i > 0 {
				out = append(out, ',')
			}
			if out, undef, err = x.value(out, depth+1); undef {
				out = append(out, "null"...) // as JSON.stringify
			}
			return err
		})
		out = append(out, ']')
	case isMap(c):
		members := 0
		out = append(out, '{')
		err = x.eachKey(func(k []byte) (err error) {
			mark := len(out)
			if members > 0 {
				out = append(out, ',')
			}
			out = append(appendJSONString(out, k), ':')
			if out, undef, err = x.value(out, depth+1); undef {
				out = out[:mark] // JSON.stringify drops undefined members
			} else {
				members++
			}
			return err
		})
		out = append(out, '}')
	default:
		err = fmt.Errorf("adapter: invalid msgpack code 0x%02x", c)
	}
	if err != nil {
		return nil, false, err
	}
	return out, false, nil
}

// ext decodes notepack's extensions: type 0 (undefined, Date, ArrayBuffer;
// notepack 2) and msgpack timestamps (type -1, Date in notepack 3).
func (x *mpDecoder) ext(out []byte, c byte) ([]byte, bool, error) {
	id, n, err := x.d.DecodeExtHeader()
	if err != nil || n > x.r.Len() {
		return nil, false, errors.Join(errMalformed, err)
	}
	b := make([]byte, n)
	if err := x.d.ReadFull(b); err != nil {
		return nil, false, err
	}
	u32 := func(i int) float64 { return float64(binary.BigEndian.Uint32(b[i:])) }
	switch {
	case c == msgpcode.FixExt1 && id == 0:
		return out, true, nil
	case c == msgpcode.FixExt8 && id == 0:
		return appendDate(out, float64(int64(binary.BigEndian.Uint64(b)))), false, nil
	case c == msgpcode.FixExt4 && id == -1:
		return appendDate(out, u32(0)*1e3), false, nil
	case c == msgpcode.FixExt8 && id == -1: // 30-bit ns, 34-bit s
		hi := binary.BigEndian.Uint32(b)
		return appendDate(out, (float64(hi&3)*0x1p32+u32(4))*1e3+float64(hi>>2)/1e6), false, nil
	case c == msgpcode.Ext8 && id == -1 && n == 12: // 32-bit ns, 64-bit s
		hi := float64(int32(binary.BigEndian.Uint32(b[4:])))
		return appendDate(out, (hi*0x1p32+u32(8))*1e3+u32(0)/1e6), false, nil
	case (c == msgpcode.Ext8 || c == msgpcode.Ext16 || c == msgpcode.Ext32) && id == 0:
		return x.attach(out, b), false, nil
	}
	return nil, false, fmt.Errorf("adapter: unsupported msgpack ext type %d (code 0x%02x)", id, c)
}

func (x *mpDecoder) attach(out, b []byte) []byte {
	out = fmt.Appendf(out, `{"_placeholder":true,"num":%d}`, len(x.att))
	x.att = append(x.att, b)
	return out
}

// appendDate appends JSON.stringify(new Date(ms)), computed as JS does.
func appendDate(out []byte, ms float64) []byte {
	if math.IsNaN(ms) || math.Abs(ms) > 8.64e15 {
		return append(out, "null"...) // Invalid Date
	}
	t := time.UnixMilli(int64(ms)).UTC() // int64() truncates like TimeClip
	if y := t.Year(); y < 0 || y > 9999 {
		out = fmt.Appendf(out, `"%+07d`, y)
	} else {
		out = fmt.Appendf(out, `"%04d`, y)
	}
	return append(t.AppendFormat(out, "-01-02T15:04:05.000"), `Z"`...)
}

// appendJSNumber formats f as JavaScript's Number#toString does.
func appendJSNumber(out []byte, f float64) []byte {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return append(out, "null"...)
	case f == 0:
		return append(out, '0')
	case f < 0:
		out, f = append(out, '-'), -f
	}
	mant, exp, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
	digits := strings.Replace(mant, ".", "", 1)
	e, _ := strconv.Atoi(exp)
	k, n := len(digits), e+1 // f = 0.digits × 10^n
	switch {
	case k <= n && n <= 21:
		return append(append(out, digits...), strings.Repeat("0", n-k)...)
	case 0 < n && n <= 21:
		return append(append(append(out, digits[:n]...), '.'), digits[n:]...)
	case -6 < n && n <= 0:
		return append(append(append(out, "0."...), strings.Repeat("0", -n)...), digits...)
	}
	out = append(out, digits[0])
	if k > 1 {
		out = append(append(out, '.'), digits[1:]...)
	}
	return fmt.Appendf(out, "e%+d", n-1)
}

// jsonEscape[c] is the letter after '\\' for the ASCII bytes JSON.stringify
// escapes that way; 0 elsewhere.
var jsonEscape = [128]byte{'"': '"', '\\': '\\', '\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't'}

// appendJSONString quotes b as JSON.stringify does; invalid UTF-8 becomes
// U+FFFD. Plain ASCII, the common case, is copied in runs.
func appendJSONString(out, b []byte) []byte {
	out = append(out, '"')
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] >= 0x20 && b[i] < utf8.RuneSelf && jsonEscape[b[i]] == 0 {
			i++
		}
		out = append(out, b[:i]...)
		b = b[i:]
		if len(b) == 0 {
			break
		}
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r < utf8.RuneSelf && jsonEscape[r] != 0:
			out = append(out, '\\', jsonEscape[r])
		case r < 0x20:
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = utf8.AppendRune(out, r)
		}
	}
	return append(out, '"')
}

// RequestType is the type of a request on socket.io-request#<nsp>#.
type RequestType int

// Request types of @socket.io/redis-adapter v8.
const (
	RequestSockets RequestType = iota
	RequestAllRooms
	RequestRemoteJoin
	RequestRemoteLeave
	RequestRemoteDisconnect
	RequestRemoteFetch
	RequestServerSideEmit
	RequestBroadcast
	RequestBroadcastClientCount
	RequestBroadcastAck
)

// Request is a JSON request from another node or an emitter (the emitter
// sends no UID). Empty lists are nil.
type Request struct {
	UID       string
	RequestID string
	Type      RequestType
	Rooms     []string // opts.rooms: the sockets targeted
	Except    []string // opts.except
	JoinRooms []string // top-level rooms: what join/leave adds or removes
	Close     bool
	Data      []json.RawMessage
}

type roomOpts struct {
	Rooms  []string `json:"rooms"`
	Except []string `json:"except"`
}

// DecodeRequest decodes a JSON request; msgpack ones (BROADCAST with an ack)
// are refused.
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("adapter: msgpack requests (broadcast with ack) are not supported")
	}
	var w struct {
		UID       string            `json:"uid"`
		RequestID string            `json:"requestId"`
		Type      *RequestType      `json:"type"`
		Opts      roomOpts          `json:"opts"`
		Rooms     []string          `json:"rooms"`
		Close     bool              `json:"close"`
		Data      []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &w); err != nil || w.Type == nil {
		return nil, errors.Join(errors.New("adapter: invalid request"), err)
	}
	return &Request{UID: w.UID, RequestID: w.RequestID, Type: *w.Type, Rooms: nilIfEmpty(w.Opts.Rooms),
		Except: nilIfEmpty(w.Opts.Except), JoinRooms: nilIfEmpty(w.Rooms), Close: w.Close, Data: w.Data}, nil
}

func nilIfEmpty(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}

// EncodeDisconnectRequest encodes a REMOTE_DISCONNECT request.
func EncodeDisconnectRequest(uid string, rooms, except []string, close bool) []byte {
	b, _ := json.Marshal(struct { // strings and slices always marshal
		UID   string      `json:"uid"`
		Type  RequestType `json:"type"`
		Opts  roomOpts    `json:"opts"`
		Close bool        `json:"close"`
	}{uid, RequestRemoteDisconnect, roomOpts{append([]string{}, rooms...), append([]string{}, except...)}, close})
	return b
}

// EncodeAllRoomsResponse encodes the answer to an ALL_ROOMS request.
func EncodeAllRoomsResponse(requestID string, rooms []string) []byte {
	b, _ := json.Marshal(struct {
		RequestID string   `json:"requestId"`
		Rooms     []string `json:"rooms"`
	}{requestID, append([]string{}, rooms...)})
	return b
}
