package adapter

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ History = (*Redis)(nil)

// historyKey is a room's stream; its hash tag keeps each script on one slot.
func (r *Redis) historyKey(roomHash string) string {
	return "hubnode:history:{" + roomHash + "}"
}

// recordScript appends a broadcast to its room's stream and publishes it,
// atomically, so the offset a client sees is the message's position in the
// history. The message arrives encoded with a placeholder position, which
// the script replaces by the stream id, left-padded to a fixed width.
var recordScript = redis.NewScript(`
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'p', ARGV[2], 'i', ARGV[3])
if #id > 24 then return redis.error_reply('stream id too long') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', '~', tostring(now - tonumber(ARGV[5])))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local pos = string.rep('0', 24 - #id) .. id
local i = tonumber(ARGV[3])
redis.call('PUBLISH', ARGV[1], string.sub(ARGV[2], 1, i - 1) .. pos .. string.sub(ARGV[2], i + 24))
return id
`)

// recoverScript returns the entries after a position, or false when the
// position itself is no longer kept (something after it may be lost).
var recoverScript = redis.NewScript(`
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
`)

// recordAndPublish is Broadcast for a recorded message: the history write
// and the PUBLISH happen in one script, then local delivery with the offset.
func (r *Redis) recordAndPublish(ctx context.Context, msg *Message) error {
	if !r.up.Load() {
		r.h.DeliverLocal(msg)
		r.stats.PublishErrors.Add(1)
		return ErrNotConnected
	}
	keys, args, err := r.recordArgs(msg)
	if err != nil {
		return err
	}
	id, err := recordScript.Run(ctx, r.opts.Client, keys, args...).Text()
	if err != nil {
		r.h.DeliverLocal(msg) // local recipients still get it, without an offset
		r.stats.PublishErrors.Add(1)
		return fmt.Errorf("adapter: record and publish: %w", err)
	}
	r.stats.Published.Add(1)
	withOffset(msg, RoomHash(msg.Rooms[0])+":"+padPos(id))
	r.h.DeliverLocal(msg)
	return nil
}

// recordArgs are recordScript's keys and arguments for a single-room
// broadcast: the message is encoded once with a placeholder offset, which
// the script overwrites with the stream id.
func (r *Redis) recordArgs(msg *Message) (keys []string, args []any, err error) {
	room := msg.Rooms[0]
	tmpl := *msg
	tmpl.Data = slices.Clip(msg.Data) // the offset must not land in msg's array
	withOffset(&tmpl, offsetPlaceholder(room))
	payload, err := EncodeBroadcast(r.uid, &tmpl)
	if err != nil {
		return nil, nil, err
	}
	return r.recordArgsFor(room, payload)
}

// offsetPlaceholder stands for an offset of room until the script knows it.
func offsetPlaceholder(room string) string {
	return RoomHash(room) + ":" + strings.Repeat("X", posLen)
}

// recordArgsFor are recordScript's keys and arguments for payload, a
// broadcast to room holding offsetPlaceholder(room) as its last datum.
func (r *Redis) recordArgsFor(room string, payload []byte) (keys []string, args []any, err error) {
	hash := RoomHash(room)
	at := bytes.LastIndex(payload, []byte(offsetPlaceholder(room)))
	if at < 0 {
		return nil, nil, fmt.Errorf("adapter: offset placeholder not found")
	}
	idx := at + roomHashLen + 1 + 1 // 1-based for Lua
	return []string{r.historyKey(hash)},
		[]any{r.roomChannel(room), payload, idx, r.opts.HistoryMaxLen, r.opts.HistoryWindow.Milliseconds()}, nil
}

// Recoverable implements History.
func (r *Redis) Recoverable(ctx context.Context, offset string) bool {
	if r.opts.HistoryWindow <= 0 {
		return false
	}
	hash, p, err := parseOffset(offset)
	if err != nil || time.Since(time.UnixMilli(int64(p.ms))) > r.opts.HistoryWindow {
		return false
	}
	n, err := r.opts.Client.XRange(ctx, r.historyKey(hash), p.String(), p.String()).Result()
	return err == nil && len(n) == 1
}

// Recover implements History.
func (r *Redis) Recover(ctx context.Context, room, offset string) ([]*Message, bool, error) {
	hash, p, err := parseOffset(offset)
	if err != nil || hash != RoomHash(room) || r.opts.HistoryWindow <= 0 {
		return nil, false, nil
	}
	res, err := recoverScript.Run(ctx, r.opts.Client, []string{r.historyKey(hash)}, p.String(), r.opts.HistoryMaxLen).Result()
	if err == redis.Nil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	entries, _ := res.([]any)
	out := make([]*Message, 0, len(entries))
	for _, e := range entries {
		msg, err := historyEntry(hash, e)
		if err != nil {
			return nil, false, err
		}
		out = append(out, msg)
	}
	return out, true, nil
}

// historyEntry rebuilds a message from a stream entry: [id, [p, payload, i, index]].
func historyEntry(hash string, e any) (*Message, error) {
	pair, _ := e.([]any)
	if len(pair) != 2 {
		return nil, fmt.Errorf("adapter: bad history entry")
	}
	id, _ := pair[0].(string)
	fields, _ := pair[1].([]any)
	var payload string
	var idx int
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "p":
			payload = v
		case "i":
			idx, _ = strconv.Atoi(v)
		}
	}
	if idx < 1 || idx-1+posLen > len(payload) {
		return nil, fmt.Errorf("adapter: bad history entry")
	}
	b := []byte(payload)
	copy(b[idx-1:], padPos(id))
	_, msg, err := DecodeBroadcast(b)
	if err != nil {
		return nil, err
	}
	msg.Offset = hash + ":" + padPos(id)
	return msg, nil
}
