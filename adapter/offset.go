package adapter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// An offset names a message in a room's history: the room's hash, then its
// position, a Redis stream id ("<ms>-<seq>") left-padded with zeros to a
// fixed width, so that it can be spliced into an encoded message without
// re-encoding it: "9f2c…(16 hex):0000000001718000000000-0".
const (
	roomHashLen = 16
	posLen      = 24
	offsetLen   = roomHashLen + 1 + posLen
)

// RoomHash is the room's name hashed, as offsets and history keys carry it.
func RoomHash(room string) string {
	h := sha256.Sum256([]byte(room))
	return hex.EncodeToString(h[:roomHashLen/2])
}

// position is a history position: a stream id.
type position struct{ ms, seq uint64 }

func (p position) String() string {
	return strconv.FormatUint(p.ms, 10) + "-" + strconv.FormatUint(p.seq, 10)
}

func (p position) less(q position) bool { return p.ms < q.ms || (p.ms == q.ms && p.seq < q.seq) }

func padPos(id string) string { return strings.Repeat("0", max(0, posLen-len(id))) + id }

func makeOffset(roomHash string, p position) string { return roomHash + ":" + padPos(p.String()) }

// parseOffset splits an offset into its room hash and position.
func parseOffset(off string) (roomHash string, p position, err error) {
	if len(off) != offsetLen || off[roomHashLen] != ':' {
		return "", p, fmt.Errorf("adapter: malformed offset")
	}
	id := strings.TrimLeft(off[roomHashLen+1:], "0")
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return "", p, fmt.Errorf("adapter: malformed offset")
	}
	if p.ms, err = strconv.ParseUint(ms, 10, 64); err != nil {
		return "", p, fmt.Errorf("adapter: malformed offset")
	}
	if p.seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return "", p, fmt.Errorf("adapter: malformed offset")
	}
	return off[:roomHashLen], p, nil
}

// CompareOffsets orders two offsets of one room; unparsable ones compare equal.
func CompareOffsets(a, b string) int {
	_, pa, ea := parseOffset(a)
	_, pb, eb := parseOffset(b)
	switch {
	case ea != nil || eb != nil:
		return 0
	case pa.less(pb):
		return -1
	case pb.less(pa):
		return 1
	}
	return 0
}

// withOffset appends off to the message's data and drops its frame, which
// must be encoded again with the offset.
func withOffset(msg *Message, off string) {
	q, _ := json.Marshal(off)
	msg.Data = append(msg.Data, q)
	msg.Offset = off
	msg.Frame = nil
}

// offsetOf recovers the offset a message from another node carries as its
// last data element.
// An offset is a plain JSON string of known width and alphabet, so it is
// recognised without a JSON decoder, which cost an allocation or more per
// received broadcast (the last element is usually the event's payload).
func offsetOf(msg *Message) string {
	n := len(msg.Data)
	if n < 2 {
		return ""
	}
	d := msg.Data[n-1]
	if len(d) != offsetLen+2 || d[0] != '"' || d[len(d)-1] != '"' {
		return ""
	}
	for _, c := range d[1 : len(d)-1] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == ':' || c == '-') {
			return ""
		}
	}
	s := string(d[1 : len(d)-1])
	if _, _, err := parseOffset(s); err != nil {
		return ""
	}
	return s
}

// OffsetInRoom reports whether off is an offset of room's history.
func OffsetInRoom(off, room string) bool {
	hash, _, err := parseOffset(off)
	return err == nil && hash == RoomHash(room)
}
