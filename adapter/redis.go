package adapter

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisOptions configure the Redis adapter. Zero values take the defaults stated per field.
type RedisOptions struct {
	// Client publishes and runs commands. Required.
	Client redis.UniversalClient
	// Key prefixes every channel, as @socket.io/redis-adapter's `key`. Default "socket.io".
	Key string
	// UnsubscribeDelay defers dropping a room channel after its last local
	// member leaves, so reconnect churn does not flap subscriptions. Default 1s.
	UnsubscribeDelay time.Duration
	// HistoryWindow keeps recorded broadcasts this long in a capped Redis
	// stream per room, for recovery on any node. Zero keeps none.
	HistoryWindow time.Duration
	// HistoryMaxLen bounds each room's stream. Default 500.
	HistoryMaxLen int
	// EmitterRooms is the name prefix of the rooms whose broadcasts from
	// @socket.io/redis-emitter are recorded into history (with HistoryWindow
	// set), by one elected node (a second one stands by), so they carry
	// offsets too. Empty: none.
	EmitterRooms string
	// RelayWait bounds how long a node holds an emitter broadcast for the
	// recorder's copy with an offset before delivering it without one.
	// Default 5s: longer than a standby recorder needs to take over from
	// one that crashed (at most 4 probe intervals).
	RelayWait time.Duration
	// ProbeInterval paces the probe message that proves the pub/sub
	// connection still delivers. Default 1s; the link is unhealthy after
	// five intervals without receiving anything, and replaced after ten.
	ProbeInterval time.Duration
	// Logger receives the adapter's logs. Default: none.
	Logger *zap.Logger
}

// maxSubscribeBatch bounds the channels of one SUBSCRIBE or UNSUBSCRIBE.
const maxSubscribeBatch = 512

// A pub/sub connection that has received nothing, not even this node's own
// probes, for unhealthyAfter probe intervals makes the node unready; after
// reconnectAfter intervals it is replaced. Both leave room for a loaded
// machine's stalls (GC, CPU starvation) before declaring a link dead.
const (
	unhealthyAfter = 5
	reconnectAfter = 10
)

// batchWait bounds how long a SUBSCRIBE batch waits for its confirmations
// before the next batch goes out anyway (a lost connection, say).
const batchWait = 200 * time.Millisecond

// ErrNotConnected is returned while the pub/sub connection is down.
var ErrNotConnected = errors.New("adapter: redis pub/sub not connected")

// Redis is the cluster adapter: @socket.io/redis-adapter's classic Pub/Sub
// format, with one SUBSCRIBE per room this node holds (never a pattern over
// every room), so an emit costs Redis one delivery per node that holds the
// user.
type Redis struct {
	opts RedisOptions
	log  *zap.Logger
	uid  string
	h    Handler

	base, request, probe string // channels

	mu    sync.Mutex
	rooms map[string]*roomSub // channel -> state
	ps    *redis.PubSub       // current connection; replaced on failure

	ops       chan subOp
	inflight  atomic.Int64  // confirmations the current SUBSCRIBE batch awaits
	batchDone chan struct{} // the current batch is confirmed
	lastSeen  atomic.Int64  // unix nanos of the last pub/sub receipt
	up        atomic.Bool
	stats     RedisStats

	relays        relays
	recorderAlive atomic.Bool  // some node holds the recorder's lease
	leaseUntil    atomic.Int64 // unix nanos: this node records until then
	crashed       bool         // tests: Close leaves the recorder leases to lapse

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// RedisStats count the adapter's traffic, for metrics.
type RedisStats struct {
	Published     atomic.Int64
	PublishErrors atomic.Int64
	Received      atomic.Int64
	Dropped       atomic.Int64 // undecodable or unsupported messages
	Reconnects    atomic.Int64
	ProbeRTT      atomic.Int64 // nanoseconds: the latest probe's trip through pub/sub

	Recorded      atomic.Int64 // emitter broadcasts this node recorded as the recorder
	RecordErrors  atomic.Int64 // emitter broadcasts the recorder failed to record
	RelayHeld     atomic.Int64 // emitter broadcasts held for the recorder's copy
	RelayTimeouts atomic.Int64 // held broadcasts delivered without an offset after RelayWait
	RelayLate     atomic.Int64 // recorder copies dropped: their original went out already
}

type roomSub struct {
	want      bool // a local member holds the room
	confirmed bool // Redis acknowledged the SUBSCRIBE on the current connection
	waiters   []chan struct{}
	unsub     *time.Timer
}

type subOp struct {
	channel   string
	subscribe bool
}

var _ Adapter = (*Redis)(nil)

// NewRedis returns a Redis adapter; Start connects it.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Client == nil {
		return nil, errors.New("adapter: RedisOptions.Client is required")
	}
	if o.Key == "" {
		o.Key = "socket.io"
	}
	if o.UnsubscribeDelay <= 0 {
		o.UnsubscribeDelay = time.Second
	}
	if o.HistoryMaxLen <= 0 {
		o.HistoryMaxLen = 500
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.RelayWait <= 0 {
		o.RelayWait = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	r := &Redis{
		opts:      o,
		log:       o.Logger,
		uid:       newUID(),
		base:      o.Key + "#/#",
		request:   o.Key + "-request#/#",
		rooms:     make(map[string]*roomSub),
		ops:       make(chan subOp, 4096),
		batchDone: make(chan struct{}, 1),
		relays:    relays{held: make(map[string][]*heldMsg), released: make(map[string]*releasedMsg)},
	}
	r.probe = "hubnode#probe#" + r.uid
	return r, nil
}

// UID is this node's id on the wire (6 characters, as Node's adapter uses).
func (r *Redis) UID() string { return r.uid }

// Stats returns the adapter's counters.
func (r *Redis) Stats() *RedisStats { return &r.stats }

// Start implements Adapter. It returns at once; the connection is made and
// remade in the background, and Healthy reports when it is usable.
func (r *Redis) Start(ctx context.Context, h Handler) error {
	r.h = h
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.wg.Add(3)
	go r.runPubSub()
	go r.runSubscriber()
	go r.runProbe()
	if o := r.opts; o.HistoryWindow > 0 && o.EmitterRooms != "" {
		r.wg.Add(1)
		go r.runRecorderLease()
	}
	return nil
}

// Close implements Adapter.
func (r *Redis) Close() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.mu.Lock()
	if r.ps != nil {
		_ = r.ps.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// Healthy reports an error unless commands and pub/sub both work: Redis
// answers PING and the pub/sub connection received something (at least our
// own probe) recently. A subscription that silently stopped delivering, as
// after a failover, fails this check although PING succeeds.
func (r *Redis) Healthy(ctx context.Context) error {
	if !r.up.Load() { // known down: answer at once
		return ErrNotConnected
	}
	if age := time.Since(time.Unix(0, r.lastSeen.Load())); age > unhealthyAfter*r.opts.ProbeInterval {
		return fmt.Errorf("adapter: redis pub/sub silent for %s", age.Round(time.Millisecond))
	}
	if err := r.opts.Client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Broadcast implements Adapter: local delivery, then one PUBLISH, on the
// room's channel when there is exactly one room, else on the base channel.
func (r *Redis) Broadcast(ctx context.Context, msg *Message) error {
	if msg.Record && r.opts.HistoryWindow > 0 && len(msg.Rooms) == 1 {
		return r.recordAndPublish(ctx, msg)
	}
	r.h.DeliverLocal(msg)
	if !r.up.Load() {
		// Redis may well take the PUBLISH, but other nodes could be
		// resubscribing too: say the emit was not carried, never a silent success.
		r.stats.PublishErrors.Add(1)
		return ErrNotConnected
	}
	payload, err := EncodeBroadcast(r.uid, msg)
	if err != nil {
		return err
	}
	ch := r.base
	if len(msg.Rooms) == 1 {
		ch = r.roomChannel(msg.Rooms[0])
	}
	if err := r.opts.Client.Publish(ctx, ch, payload).Err(); err != nil {
		r.stats.PublishErrors.Add(1)
		return fmt.Errorf("adapter: publish to other nodes: %w", err)
	}
	r.stats.Published.Add(1)
	return nil
}

// DisconnectSockets implements Adapter, as REMOTE_DISCONNECT on the request channel.
func (r *Redis) DisconnectSockets(ctx context.Context, rooms []string, close bool) error {
	r.h.DisconnectLocal(rooms, nil, close)
	if err := r.opts.Client.Publish(ctx, r.request, EncodeDisconnectRequest(r.uid, rooms, nil, close)).Err(); err != nil {
		r.stats.PublishErrors.Add(1)
		return fmt.Errorf("adapter: publish disconnect to other nodes: %w", err)
	}
	r.stats.Published.Add(1)
	return nil
}

func (r *Redis) roomChannel(room string) string { return r.base + room + "#" }

// AddRoom implements Adapter: it returns once Redis has confirmed the
// room's SUBSCRIBE on the live connection.
func (r *Redis) AddRoom(ctx context.Context, room string) error {
	ch := r.roomChannel(room)
	r.mu.Lock()
	st := r.rooms[ch]
	if st == nil {
		st = &roomSub{}
		r.rooms[ch] = st
	}
	if st.unsub != nil {
		st.unsub.Stop()
		st.unsub = nil
	}
	needSub := !st.want
	st.want = true
	if st.confirmed {
		r.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	st.waiters = append(st.waiters, done)
	r.mu.Unlock()
	if needSub {
		r.enqueue(ctx, subOp{channel: ch, subscribe: true})
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("adapter: subscribe %s: %w", room, ctx.Err())
	}
}

// DelRoom implements Adapter: the UNSUBSCRIBE waits UnsubscribeDelay in
// case a member comes back.
func (r *Redis) DelRoom(room string) {
	ch := r.roomChannel(room)
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.rooms[ch]
	if st == nil || !st.want {
		return
	}
	st.want = false
	st.unsub = time.AfterFunc(r.opts.UnsubscribeDelay, func() {
		r.mu.Lock()
		cur := r.rooms[ch]
		drop := cur == st && !st.want
		if drop {
			delete(r.rooms, ch)
		}
		r.mu.Unlock()
		if drop {
			r.enqueue(r.ctx, subOp{channel: ch})
		}
	})
}

func (r *Redis) enqueue(ctx context.Context, op subOp) {
	select {
	case r.ops <- op:
	case <-ctx.Done():
	}
}

// runSubscriber sends queued (UN)SUBSCRIBEs in batches: while one batch
// awaits its confirmations the next one collects, so a reconnect storm of
// thousands of users costs a few commands, and an idle node waits for nothing.
func (r *Redis) runSubscriber() {
	defer r.wg.Done()
	for {
		var first subOp
		select {
		case first = <-r.ops:
		case <-r.ctx.Done():
			return
		}
		// What each touched channel needs is decided by its state now, not
		// by the order of the queued ops: an UNSUBSCRIBE queued by a
		// deferred timer may trail a newer AddRoom of the same room.
		touched := map[string]bool{first.channel: true}
		order := []string{first.channel}
	collect:
		for len(order) < maxSubscribeBatch {
			select {
			case op := <-r.ops:
				if !touched[op.channel] {
					touched[op.channel] = true
					order = append(order, op.channel)
				}
			default:
				break collect
			}
		}
		var subs, unsubs []string
		r.mu.Lock()
		for _, ch := range order {
			switch st := r.rooms[ch]; {
			case st == nil || !st.want:
				unsubs = append(unsubs, ch)
			case !st.confirmed:
				subs = append(subs, ch)
			}
		}
		r.mu.Unlock()
		if len(subs)+len(unsubs) == 0 {
			continue
		}
		r.inflight.Store(int64(len(subs) + len(unsubs)))
		if len(unsubs) > 0 {
			r.send(false, unsubs)
		}
		if len(subs) > 0 {
			r.send(true, subs)
		}
		// Let the next batch grow while this one is confirmed.
		select {
		case <-r.batchDone:
		case <-time.After(batchWait):
		case <-r.ctx.Done():
			return
		}
	}
}

// send writes one (UN)SUBSCRIBE on the current connection. A failure needs
// no retry here: the connection is being replaced, and the replacement
// subscribes every wanted room.
func (r *Redis) send(subscribe bool, chans []string) {
	r.mu.Lock()
	ps := r.ps
	r.mu.Unlock()
	if ps == nil {
		return
	}
	var err error
	if subscribe {
		err = ps.Subscribe(r.ctx, chans...)
	} else {
		err = ps.Unsubscribe(r.ctx, chans...)
	}
	if err != nil {
		r.log.Debug("redis (un)subscribe failed; the reconnect will resubscribe", zap.Error(err))
	}
}

// runPubSub keeps one pub/sub connection alive: it (re)connects, subscribes
// the base, request and probe channels and every wanted room, and reads.
func (r *Redis) runPubSub() {
	defer r.wg.Done()
	backoff := 50 * time.Millisecond
	for r.ctx.Err() == nil {
		err := r.session()
		if r.up.Swap(false) { // the session had been healthy: retry at once
			backoff = 50 * time.Millisecond
		}
		if r.ctx.Err() != nil {
			return
		}
		r.stats.Reconnects.Add(1)
		r.log.Warn("redis pub/sub connection lost; reconnecting", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// session runs one pub/sub connection until it fails or goes silent.
func (r *Redis) session() error {
	ps := r.opts.Client.Subscribe(r.ctx)
	defer ps.Close()
	if err := ps.Subscribe(r.ctx, r.base, r.request, r.probe); err != nil {
		return err
	}
	r.mu.Lock()
	r.ps = ps
	var rooms []string
	for ch, st := range r.rooms {
		st.confirmed = false
		if st.want {
			rooms = append(rooms, ch)
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.ps == ps {
			r.ps = nil
		}
		r.mu.Unlock()
	}()
	for len(rooms) > 0 {
		n := min(len(rooms), maxSubscribeBatch)
		if err := ps.Subscribe(r.ctx, rooms[:n]...); err != nil {
			return err
		}
		rooms = rooms[n:]
	}
	r.lastSeen.Store(time.Now().UnixNano())
	silence := reconnectAfter * r.opts.ProbeInterval
	for {
		m, err := ps.ReceiveTimeout(r.ctx, silence)
		if err != nil {
			if isTimeout(err) && time.Since(time.Unix(0, r.lastSeen.Load())) < silence {
				continue
			}
			return err
		}
		r.lastSeen.Store(time.Now().UnixNano())
		switch m := m.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe":
				r.confirm(m.Channel)
			case "unsubscribe":
				r.acknowledged()
			}
		case *redis.Message:
			r.onMessage(m.Channel, m.Payload)
		}
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// acknowledged counts one (UN)SUBSCRIBE reply of the batch in flight.
func (r *Redis) acknowledged() {
	if r.inflight.Add(-1) == 0 {
		select {
		case r.batchDone <- struct{}{}:
		default:
		}
	}
}

// confirm marks a channel subscribed and releases those waiting for it.
func (r *Redis) confirm(ch string) {
	if ch == r.base {
		r.up.Store(true)
		r.log.Info("redis pub/sub connected", zap.String("uid", r.uid))
		return
	}
	r.acknowledged()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.rooms[ch]
	if st == nil {
		return
	}
	st.confirmed = true
	for _, w := range st.waiters {
		close(w)
	}
	st.waiters = nil
}

// runProbe publishes a probe to this node's own channel: receiving it proves
// the whole path (command connection → Redis → pub/sub connection) works.
func (r *Redis) runProbe() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(r.ctx, r.opts.ProbeInterval)
			_ = r.opts.Client.Publish(ctx, r.probe, strconv.FormatInt(time.Now().UnixNano(), 10)).Err()
			cancel()
		case <-r.ctx.Done():
			return
		}
	}
}

// onMessage handles a broadcast or request from another node or an emitter.
func (r *Redis) onMessage(channel, payload string) {
	switch {
	case channel == r.probe:
		if sent, err := strconv.ParseInt(payload, 10, 64); err == nil {
			r.stats.ProbeRTT.Store(time.Now().UnixNano() - sent)
		}
		return
	case channel == r.request:
		r.onRequest([]byte(payload))
		return
	case !strings.HasPrefix(channel, r.base):
		return
	}
	r.stats.Received.Add(1)
	if r.recordsEmitter(channel) && r.recorderAlive.Load() {
		// An emitter original is held as it came: the recorder's copy
		// usually replaces it, so it is decoded only if that never comes.
		if uid, ok := peekUID(payload); ok && uid == emitterUID {
			if r.holdsChannel(channel) {
				r.holdForRelay(channel, payload)
			}
			return
		}
	}
	uid, msg, err := decodeBroadcastString(payload)
	if err != nil {
		r.stats.Dropped.Add(1)
		r.log.Debug("undecodable broadcast dropped", zap.String("channel", channel), zap.Error(err))
		return
	}
	// This node's own broadcasts were delivered locally already, but for
	// relays, which stand in for an emitter's broadcast held here.
	if uid == r.uid && msg.Relay == "" || msg.Nsp != "/" {
		return
	}
	msg.Offset = offsetOf(msg)
	if msg.Relay != "" && r.recordsEmitter(channel) {
		// Even for a room this node no longer holds: the copy must take its
		// original off the held queue, or a later copy would release it.
		r.deliverRelay(channel, msg)
		return
	}
	if channel != r.base && !r.holdsChannel(channel) {
		return // a late message for a room this node just left
	}
	if uid == emitterUID && msg.Offset == "" && r.recordsEmitter(channel) {
		r.deliveredUnheld(channel, payload)
	}
	r.h.DeliverLocal(msg)
}

// holdsChannel reports whether a local member holds channel's room.
func (r *Redis) holdsChannel(channel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.rooms[channel]
	return st != nil && st.want
}

// onRequest serves the requests hubnode acts on: disconnects from other
// nodes and from @socket.io/redis-emitter's disconnectSockets. Others
// (fetch, join, server-side emit) are ignored: hubnode's rooms are fixed by
// authentication, and no server-side handlers exist.
func (r *Redis) onRequest(payload []byte) {
	req, err := DecodeRequest(payload)
	if err != nil {
		r.stats.Dropped.Add(1)
		r.log.Debug("undecodable request dropped", zap.Error(err))
		return
	}
	if req.UID == r.uid {
		return
	}
	if req.Type == RequestRemoteDisconnect {
		r.h.DisconnectLocal(req.Rooms, req.Except, req.Close)
	}
}

// newUID returns 6 random alphanumerics, like Node's uid2(6).
func newUID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
