package adapter

import (
	"cmp"
	"context"
	"encoding/hex"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The emitter door. @socket.io/redis-emitter PUBLISHes straight to a room's
// channel: its events pass no node's emit path, so nothing records them and
// they carry no offset. One node of the cluster, the recorder (elected by a
// lease in Redis), PSUBSCRIBEs the recorded rooms' channels, and for every
// emitter broadcast runs the same script as a node's own emits: XADD to the
// room's history and PUBLISH the broadcast again, now with its offset and a
// relay mark. A standby watches the same channels and, when it takes over
// (the recorder drained or died), records the originals that got no relay,
// so each is recorded exactly once. A node holding the room holds the
// emitter's original until the relay arrives and delivers the relay
// instead; if none comes within RelayWait, it delivers the original without
// an offset, so a live socket never loses an event to the recording.

// emitterUID is the uid @socket.io/redis-emitter puts in every broadcast.
const emitterUID = "emitter"

// relayKeep bounds how long a node remembers originals it delivered without
// waiting for their relay, and how many.
const (
	relayKeep      = time.Minute
	relayKeepCount = 10000
)

// relayHash names an emitter broadcast: its channel and bytes. Identical
// broadcasts share a name; nodes match them first in, first out.
func relayHash(channel, payload string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(channel))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(payload))
	return hex.EncodeToString(h.Sum(nil))
}

// relays is a node's side: emitter originals held for their relay, per
// channel in arrival order, and the names of those delivered without one,
// whose late relay is then dropped. Deliveries of held channels happen under
// mu, so a channel's events leave in the order Redis delivered them.
type relays struct {
	mu       sync.Mutex
	held     map[string][]*heldMsg // by channel
	released map[string]*releasedMsg
}

type heldMsg struct {
	key     string // relayHash
	payload string // the original, decoded only if delivered
	timer   *time.Timer
}

type releasedMsg struct {
	n     int
	until time.Time
}

// recordsEmitter reports whether this node records emitter broadcasts to
// channel's room, and so holds them for their relay.
func (r *Redis) recordsEmitter(channel string) bool {
	return r.opts.HistoryWindow > 0 && r.opts.EmitterRooms != "" && channel != r.base &&
		strings.HasPrefix(channel, r.base+r.opts.EmitterRooms)
}

// holdForRelay keeps an emitter original until its relay arrives.
func (r *Redis) holdForRelay(channel, payload string) {
	h := &heldMsg{key: relayHash(channel, payload), payload: payload}
	r.relays.mu.Lock()
	r.relays.held[channel] = append(r.relays.held[channel], h)
	h.timer = time.AfterFunc(r.opts.RelayWait, func() { r.relayTimedOut(channel, h) })
	r.relays.mu.Unlock()
	r.stats.RelayHeld.Add(1)
}

// deliveredUnheld notes an emitter original delivered at once (no recorder
// seemed alive), so that a relay for it, should one come, is dropped.
func (r *Redis) deliveredUnheld(channel, payload string) {
	rl := &r.relays
	rl.mu.Lock()
	defer rl.mu.Unlock()
	r.remember(relayHash(channel, payload), time.Now())
}

// remember notes that the original named key went out without an offset.
// Called with r.relays.mu held.
func (r *Redis) remember(key string, now time.Time) {
	rl := &r.relays
	if len(rl.released) >= relayKeepCount {
		for k, v := range rl.released {
			if now.After(v.until) {
				delete(rl.released, k)
			}
		}
		if len(rl.released) >= relayKeepCount {
			clear(rl.released)
		}
	}
	rel := rl.released[key]
	if rel == nil || now.After(rel.until) {
		rel = &releasedMsg{}
		rl.released[key] = rel
	}
	rel.n++
	rel.until = now.Add(relayKeep)
}

// relayTimedOut delivers an original whose relay did not come in time, and
// any held before it.
func (r *Redis) relayTimedOut(channel string, h *heldMsg) {
	rl := &r.relays
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if i := slices.Index(rl.held[channel], h); i >= 0 {
		r.releaseHeld(channel, i+1)
	}
}

// releaseHeld delivers, without offsets, the first n originals held on
// channel, remembering them so that a late relay is dropped. Called with
// r.relays.mu held.
func (r *Redis) releaseHeld(channel string, n int) {
	rl := &r.relays
	q := rl.held[channel]
	now := time.Now()
	for _, h := range q[:n] {
		h.timer.Stop()
		r.remember(h.key, now)
		r.stats.RelayTimeouts.Add(1)
		if _, msg, err := decodeBroadcastString(h.payload); err == nil && msg.Nsp == "/" {
			r.h.DeliverLocal(msg)
		} else {
			r.stats.Dropped.Add(1)
		}
	}
	r.log.Debug("emitter broadcasts delivered without their relay", zap.String("channel", channel), zap.Int("n", n))
	r.dropHeld(channel, n)
}

// dropHeld forgets the first n originals held on channel.
func (r *Redis) dropHeld(channel string, n int) {
	if q := r.relays.held[channel]; n >= len(q) {
		delete(r.relays.held, channel)
	} else {
		clear(q[:n])
		r.relays.held[channel] = q[n:]
	}
}

// deliverRelay delivers a relay in place of its held original. The recorder
// relays in the order Redis delivered the originals, so originals held
// before the matching one will get no relay: they go first, without
// offsets. A relay whose original went out already is dropped.
func (r *Redis) deliverRelay(channel string, msg *Message) {
	// A room no member holds any more still has its held originals taken
	// off by their copies; nothing is delivered, and nothing stale is left
	// for a copy to release once a member is back.
	held := r.holdsChannel(channel)
	rl := &r.relays
	rl.mu.Lock()
	defer rl.mu.Unlock()
	q := rl.held[channel]
	if i := slices.IndexFunc(q, func(h *heldMsg) bool { return h.key == msg.Relay }); i >= 0 {
		if i > 0 {
			if held {
				r.releaseHeld(channel, i)
			} else {
				r.discardHeld(channel, i)
			}
		}
		rl.held[channel][0].timer.Stop()
		r.dropHeld(channel, 1)
		if held {
			r.h.DeliverLocal(msg)
		}
		return
	}
	if rel := rl.released[msg.Relay]; rel != nil && rel.n > 0 && time.Now().Before(rel.until) {
		if rel.n--; rel.n == 0 {
			delete(rl.released, msg.Relay)
		}
		r.stats.RelayLate.Add(1)
		return
	}
	if held {
		r.h.DeliverLocal(msg)
	}
}

// discardHeld forgets the first n originals held on channel, undelivered:
// no member holds the room. Called with r.relays.mu held.
func (r *Redis) discardHeld(channel string, n int) {
	for _, h := range r.relays.held[channel][:n] {
		h.timer.Stop()
	}
	r.dropHeld(channel, n)
}

// peekUID reads the sender's uid off an encoded broadcast without
// decoding it: [uid, packet, opts] starts with a fixarray and a short string.
func peekUID(payload string) (string, bool) {
	if len(payload) < 2 || payload[0] != 0x93 {
		return "", false
	}
	n, at := 0, 2
	switch c := payload[1]; {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 && len(payload) > 2:
		n, at = int(payload[2]), 3
	default:
		return "", false
	}
	if len(payload) < at+n {
		return "", false
	}
	return payload[at : at+n], true
}

// peekRelay reads the relay flag off a broadcast EncodeBroadcast wrote: the
// flags map {hubnodeRelay: <16 hex>} ends it.
func peekRelay(payload string) string {
	const tail = "\x81\xac" + relayFlag + "\xb0"
	if n := len(payload); n >= len(tail)+16 && payload[n-16-len(tail):n-16] == tail {
		return payload[n-16:]
	}
	return ""
}

// Two leases name the recorder and its standby. Both are renewed every
// ProbeInterval and lapse after leaseIntervals of them; the recorder stops
// recording leaseMargin intervals before its lease could lapse, so two
// recorders never run at once. Only the standby is promoted: it has watched
// the same broadcasts, and records those the recorder left without a copy.
const (
	leaseIntervals = 3
	leaseMargin    = 1
)

// Roles in the emitter recording.
const (
	roleNone = iota
	roleStandby
	roleRecorder
)

// leaseScript renews this node's lease, or takes one: a standby becomes
// the recorder when the recorder's lease is free, any other node becomes
// the standby when that one is. It returns {role, whether a recorder or a
// standby exists}: either way emitter broadcasts will be recorded.
var leaseScript = redis.NewScript(`
local uid, ms = ARGV[1], ARGV[2]
if redis.call('GET', KEYS[1]) == uid then
  redis.call('PEXPIRE', KEYS[1], ms)
  return {2, 1}
end
if redis.call('GET', KEYS[2]) == uid then
  if redis.call('SET', KEYS[1], uid, 'NX', 'PX', ms) then
    redis.call('DEL', KEYS[2])
    return {2, 1}
  end
  redis.call('PEXPIRE', KEYS[2], ms)
  return {1, 1}
end
if redis.call('SET', KEYS[2], uid, 'NX', 'PX', ms) then return {1, 1} end
return {0, redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 and 1 or 0}
`)

// releaseScript gives up this node's leases.
var releaseScript = redis.NewScript(`
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0
`)

func (r *Redis) leaseKeys() []string {
	return []string{"hubnode:recorder:" + r.opts.Key, "hubnode:recorder-standby:" + r.opts.Key}
}

// runRecorderLease takes part in the election every ProbeInterval, and runs
// the watcher while this node is the standby or the recorder. Every node
// also learns whether a recorder is alive, which decides whether emitter
// originals are held for their relay.
func (r *Redis) runRecorderLease() {
	defer r.wg.Done()
	lease := leaseIntervals * r.opts.ProbeInterval
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	role := roleNone
	var quit, promote, done chan struct{} // while watching
	stopWatching := func() {
		if quit != nil {
			close(quit)
			<-done
			quit, promote, done = nil, nil, nil
			r.log.Info("no longer recording emitter broadcasts")
		}
		role = roleNone
	}
	defer func() {
		stopWatching()
		if r.crashed { // tests: leave the leases to lapse, as a killed process would
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), r.opts.ProbeInterval)
		_ = releaseScript.Run(ctx, r.opts.Client, r.leaseKeys(), r.uid).Err()
		cancel()
	}()
	for {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.ctx, r.opts.ProbeInterval)
		res, err := leaseScript.Run(ctx, r.opts.Client, r.leaseKeys(), r.uid, lease.Milliseconds()).Int64Slice()
		cancel()
		switch {
		case err != nil || len(res) != 2:
			// Redis is unusable: nothing is recorded, so hold nothing. The
			// recorder keeps its role until its lease could have lapsed.
			if role != roleRecorder || time.Now().UnixNano() > r.leaseUntil.Load() {
				stopWatching()
				r.recorderAlive.Store(false)
			}
		default:
			now := int(res[0])
			if now < role {
				stopWatching() // lost a lease: start over
			}
			if now == roleRecorder {
				r.leaseUntil.Store(start.Add(lease - leaseMargin*r.opts.ProbeInterval).UnixNano())
			}
			if now != roleNone && quit == nil {
				quit, promote, done = make(chan struct{}), make(chan struct{}), make(chan struct{})
				go r.watch(quit, promote, done)
				r.log.Info("standing by to record emitter broadcasts", zap.String("uid", r.uid))
			}
			if now == roleRecorder && role != roleRecorder {
				close(promote)
				r.log.Info("this node records emitter broadcasts", zap.String("uid", r.uid))
			}
			role = now
			r.recorderAlive.Store(res[1] == 1)
		}
		select {
		case <-t.C:
		case <-r.ctx.Done():
			return
		}
	}
}

// recordBatch bounds the emitter broadcasts recorded in one pipeline.
const recordBatch = 256

// watchedMsg is an emitter original the standby saw without its relay yet.
type watchedMsg struct {
	seq     uint64
	key     string
	channel string
	payload string
	at      time.Time
}

// watch PSUBSCRIBEs the recorded rooms' channels. As the standby it tracks
// the emitter originals the recorder has not relayed yet; once promoted it
// records those, then every original, in the order Redis delivered them.
// The promotion takes effect at a marker it publishes to itself: every
// relay of the former recorder comes before it.
func (r *Redis) watch(quit, promote <-chan struct{}, done chan struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go func() { <-quit; cancel() }() // quit is always closed, by runRecorderLease
	ps := r.opts.Client.PSubscribe(ctx)
	defer ps.Close()
	if err := ps.PSubscribe(ctx, globEscape(r.base+r.opts.EmitterRooms)+"*"); err != nil {
		return
	}
	if _, err := ps.Receive(ctx); err != nil { // the PSUBSCRIBE is confirmed
		return
	}
	if err := recordScript.Load(ctx, r.opts.Client).Err(); err != nil && ctx.Err() == nil {
		r.log.Warn("recorder: loading the record script failed", zap.Error(err))
	}
	in := ps.Channel(redis.WithChannelSize(8192))
	marker := r.base + r.opts.EmitterRooms + "#hubnode-recorder#" + r.uid
	keep := 2 * leaseIntervals * r.opts.ProbeInterval
	sweep := time.NewTicker(r.opts.ProbeInterval)
	defer sweep.Stop()
	recording := false
	pending := map[string][]*watchedMsg{} // by channel
	var seq uint64
	batch := make([]*redis.Message, 0, recordBatch)
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return
			}
			batch = append(batch[:0], m)
		case <-promote:
			promote = nil
			if err := r.opts.Client.Publish(ctx, marker, "").Err(); err != nil {
				r.log.Warn("recorder: publishing the handover marker failed", zap.Error(err))
			}
			continue
		case <-sweep.C:
			for ch, q := range pending {
				n := 0
				for n < len(q) && time.Since(q[n].at) > keep {
					n++
				}
				if n == len(q) {
					delete(pending, ch)
				} else if n > 0 {
					pending[ch] = q[n:]
				}
			}
			continue
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < recordBatch {
			select {
			case m, ok := <-in:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		var jobs []*watchedMsg
		for _, m := range batch {
			if m.Channel == marker {
				recording = true
				for _, q := range pending {
					jobs = append(jobs, q...)
				}
				slices.SortFunc(jobs, func(a, b *watchedMsg) int { return cmp.Compare(a.seq, b.seq) })
				clear(pending)
				continue
			}
			uid, ok := peekUID(m.Payload)
			switch {
			case !ok:
			case uid != emitterUID:
				if recording {
					continue // its own relays, and the nodes' emits
				}
				// The recorder relayed this one: it and those before it on
				// its channel (which it never saw) need nothing more.
				relay := peekRelay(m.Payload)
				q := pending[m.Channel]
				if relay == "" || len(q) == 0 {
					continue
				}
				if i := slices.IndexFunc(q, func(w *watchedMsg) bool { return w.key == relay }); i == len(q)-1 {
					delete(pending, m.Channel)
				} else if i >= 0 {
					pending[m.Channel] = q[i+1:]
				}
			default:
				seq++
				w := &watchedMsg{seq: seq, key: relayHash(m.Channel, m.Payload), channel: m.Channel, payload: m.Payload, at: time.Now()}
				if recording {
					jobs = append(jobs, w)
				} else {
					pending[m.Channel] = append(pending[m.Channel], w)
				}
			}
		}
		if len(jobs) == 0 {
			continue
		}
		if time.Now().UnixNano() > r.leaseUntil.Load() {
			// The lease may lapse before these are recorded, and the standby
			// will record them: leave them to it.
			r.stats.RecordErrors.Add(int64(len(jobs)))
			continue
		}
		r.recordAll(ctx, jobs)
	}
}

// recordAll records a batch of emitter originals in one pipeline.
func (r *Redis) recordAll(ctx context.Context, batch []*watchedMsg) {
	type job struct {
		keys []string
		args []any
		cmd  *redis.Cmd
	}
	jobs := make([]job, 0, len(batch))
	for _, w := range batch {
		_, msg, err := decodeBroadcastString(w.payload)
		if err != nil || msg.Nsp != "/" || len(msg.Rooms) != 1 || w.channel != r.roomChannel(msg.Rooms[0]) || offsetOf(msg) != "" {
			continue // nothing a node would record
		}
		// Decoded to check it as a node would, but copied as it came.
		payload, err := relayFrom([]byte(w.payload), r.uid, offsetPlaceholder(msg.Rooms[0]), w.key)
		if err != nil {
			r.stats.RecordErrors.Add(1)
			continue
		}
		keys, args, err := r.recordArgsFor(msg.Rooms[0], payload)
		if err != nil {
			r.stats.RecordErrors.Add(1)
			continue
		}
		jobs = append(jobs, job{keys: keys, args: args})
	}
	pipe := r.opts.Client.Pipeline()
	for i := range jobs {
		jobs[i].cmd = recordScript.EvalSha(ctx, pipe, jobs[i].keys, jobs[i].args...)
	}
	if len(jobs) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for _, j := range jobs {
		err := j.cmd.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = recordScript.Run(ctx, r.opts.Client, j.keys, j.args...).Err()
		}
		if err != nil {
			r.stats.RecordErrors.Add(1)
			r.log.Debug("recorder: recording an emitter broadcast failed", zap.Error(err))
			continue
		}
		r.stats.Recorded.Add(1)
	}
}

// globEscape quotes the glob characters of a PSUBSCRIBE pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
