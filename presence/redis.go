package presence

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of RedisOptions.
const (
	DefaultPrefix    = "hubnode:{presence}:"
	DefaultNodeTTL   = 10 * time.Second
	DefaultHeartbeat = time.Second
)

const (
	retryInterval = 500 * time.Millisecond // after a failed heartbeat
	closeTimeout  = 2 * time.Second        // for the graceful leave
	syncChunk     = 1000                   // connections per sync script call
	drainBudget   = 2000                   // users taken out per script call when reaping
	maxReapCalls  = 64                     // extra reap calls per heartbeat
	connLocks     = 64
)

// ErrClosed is returned by a Redis presence after Close.
var ErrClosed = errors.New("presence: closed")

//go:embed lua/*.lua
var luaFS embed.FS

var (
	addScript       = loadScript("add.lua")
	removeScript    = loadScript("remove.lua")
	heartbeatScript = loadScript("heartbeat.lua")
	syncScript      = loadScript("sync.lua")
	statsScript     = loadScript("stats.lua")
	allScripts      = []*redis.Script{addScript, removeScript, heartbeatScript, syncScript, statsScript}
)

func loadScript(name string) *redis.Script {
	common, err := luaFS.ReadFile("lua/common.lua")
	if err != nil {
		panic(err)
	}
	body, err := luaFS.ReadFile("lua/" + name)
	if err != nil {
		panic(err)
	}
	return redis.NewScript(string(common) + "\n" + string(body))
}

// RedisOptions configure NewRedis.
type RedisOptions struct {
	Client redis.UniversalClient // required; not closed by Close
	NodeID string                // required; unique among live nodes
	// Prefix of every key; it must contain a non-empty hash tag ("{...}") so
	// that all keys share one Redis Cluster slot. Default DefaultPrefix.
	Prefix string
	// NodeTTL: a silent node is dropped after this (plus at most one heartbeat
	// of a surviving node). Default 10s; at least twice Heartbeat.
	NodeTTL time.Duration
	// Heartbeat is the interval of registration refresh and reaping. Default 1s.
	Heartbeat time.Duration
	Logger    *zap.Logger // optional
}

// Redis is the cluster-wide presence. Each node registers in a ZSET scored by
// its expiry (Redis time), keeps its connections in its own hashes and adds
// them to global counters, all in atomic Lua scripts over keys of one slot.
// Surviving nodes reap expired nodes on every heartbeat, so a node that dies
// without Close drops out of every figure within NodeTTL + Heartbeat. The
// node keeps a local mirror of its connections and rebuilds its Redis state
// from it when Redis lost its data or reaped the node while it was alive.
type Redis struct {
	client redis.UniversalClient
	node   string
	prefix string
	ttlMs  int64
	hb     time.Duration
	log    *zap.Logger
	keys   []string // nodes, users, conns, node:<id>:conns, node:<id>:users

	// gate is shared by Add and Remove, exclusive for resync and Close, so a
	// snapshot of local is never overtaken by a script of an older change.
	gate   sync.RWMutex
	closed bool // under gate
	// conn keeps one connection's mirror update and script call in order.
	conn [connLocks]sync.Mutex
	seed maphash.Seed
	mu   sync.Mutex
	// local is this node's truth: connID -> userID.
	local map[string]string

	dirty atomic.Bool // Redis may differ from local: resync
	kick  chan struct{}

	run  sync.Mutex // Start, Close
	stop context.CancelFunc
	done chan struct{}
}

var _ Presence = (*Redis)(nil)

// NewRedis checks o and returns a presence that is not yet registered: call Start.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Client == nil {
		return nil, errors.New("presence: RedisOptions.Client is required")
	}
	if o.NodeID == "" {
		return nil, errors.New("presence: RedisOptions.NodeID is required")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !hasHashTag(o.Prefix) {
		return nil, fmt.Errorf("presence: prefix %q has no hash tag such as {presence}", o.Prefix)
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.NodeTTL < 2*o.Heartbeat {
		return nil, fmt.Errorf("presence: NodeTTL %v is less than twice Heartbeat %v", o.NodeTTL, o.Heartbeat)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	p, id := o.Prefix, o.NodeID
	return &Redis{
		client: o.Client, node: id, prefix: p, ttlMs: o.NodeTTL.Milliseconds(), hb: o.Heartbeat,
		log:   o.Logger.With(zap.String("node", id)),
		keys:  []string{p + "nodes", p + "users", p + "conns", p + "node:" + id + ":conns", p + "node:" + id + ":users"},
		seed:  maphash.MakeSeed(),
		local: make(map[string]string),
		kick:  make(chan struct{}, 1),
	}, nil
}

// hasHashTag reports whether key has a non-empty {tag}, as Redis Cluster reads it.
func hasHashTag(key string) bool {
	i := strings.IndexByte(key, '{')
	return i >= 0 && strings.IndexByte(key[i+1:], '}') > 0
}

// Start registers the node, replacing whatever an earlier process with the
// same NodeID left, then heartbeats in the background until Close. ctx bounds
// only the registration; if it fails, nothing runs and Start may be retried.
func (r *Redis) Start(ctx context.Context) error {
	r.run.Lock()
	defer r.run.Unlock()
	if r.done != nil {
		return errors.New("presence: already started")
	}
	r.gate.RLock()
	closed := r.closed
	r.gate.RUnlock()
	if closed {
		return ErrClosed
	}
	r.dirty.Store(true)
	if err := r.resync(ctx); err != nil {
		return fmt.Errorf("presence: register node %s: %w", r.node, err)
	}
	loop, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan struct{})
	go r.loop(loop, r.done)
	return nil
}

// Add implements Presence with one script call. A connection id counts once
// per node; a second Add of it, even for another user, is a no-op. The local
// mirror is updated even when Redis fails; the error is returned and the
// node resyncs as soon as Redis answers.
func (r *Redis) Add(ctx context.Context, userID, connID string) error {
	return r.change(ctx, userID, connID, true)
}

// Remove implements Presence with one script call. Removing an unknown
// connection, or one of another user, is a no-op.
func (r *Redis) Remove(ctx context.Context, userID, connID string) error {
	return r.change(ctx, userID, connID, false)
}

func (r *Redis) change(ctx context.Context, userID, connID string, add bool) error {
	r.gate.RLock()
	defer r.gate.RUnlock()
	if r.closed {
		return ErrClosed
	}
	l := &r.conn[maphash.String(r.seed, connID)%connLocks]
	l.Lock()
	defer l.Unlock()
	r.mu.Lock()
	old, ok := r.local[connID]
	if add && !ok {
		r.local[connID] = userID
	} else if !add && ok && old == userID {
		delete(r.local, connID)
	}
	r.mu.Unlock()
	if !add {
		if err := removeScript.Run(ctx, r.client, r.keys, r.prefix, r.node, connID, userID).Err(); err != nil {
			r.markDirty()
			return fmt.Errorf("presence: remove: %w", err)
		}
		return nil
	}
	res, err := addScript.Run(ctx, r.client, r.keys, r.prefix, r.node, connID, userID, r.ttlMs).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		r.markDirty()
		return fmt.Errorf("presence: add: %w", err)
	}
	if res[1] == 0 { // this node was missing or expired in Redis
		r.markDirty()
	}
	return nil
}

// UserConnections implements Presence: userID's connections on all live nodes.
func (r *Redis) UserConnections(ctx context.Context, userID string) (int, error) {
	n, err := r.client.HGet(ctx, r.keys[1], userID).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("presence: user connections: %w", err)
	}
	return n, nil
}

// Stats implements Presence: cluster figures and one row per live node,
// sorted by node id, after reaping expired nodes.
func (r *Redis) Stats(ctx context.Context) (Stats, error) {
	v, err := statsScript.Run(ctx, r.client, r.keys[:3], r.prefix, drainBudget).Slice()
	if err != nil {
		return Stats{}, fmt.Errorf("presence: stats: %w", err)
	}
	if len(v) < 2 || (len(v)-2)%3 != 0 {
		return Stats{}, fmt.Errorf("presence: stats: unexpected reply %v", v)
	}
	s := Stats{AuthenticatedUsers: toInt(v[0]), TotalConnections: toInt(v[1])}
	s.AverageConnectionsPerUser = Average(s.TotalConnections, s.AuthenticatedUsers)
	for i := 2; i < len(v); i += 3 {
		s.Nodes = append(s.Nodes, NodeStats{NodeID: fmt.Sprint(v[i]), Connections: toInt(v[i+1]), AuthenticatedUsers: toInt(v[i+2])})
	}
	slices.SortFunc(s.Nodes, func(a, b NodeStats) int { return strings.Compare(a.NodeID, b.NodeID) })
	return s, nil
}

func toInt(v any) int {
	n, _ := v.(int64)
	return int(n)
}

// Close stops the heartbeat and takes this node out of Redis (graceful
// leave, bounded by a short timeout). It does not close the client.
func (r *Redis) Close() error {
	r.run.Lock()
	defer r.run.Unlock()
	r.halt()
	r.gate.Lock()
	defer r.gate.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := r.syncChunks(ctx, "leave", nil); err != nil {
		return fmt.Errorf("presence: leave: %w", err)
	}
	return nil
}

// halt stops the heartbeat loop, as a SIGKILL would; run must be held.
func (r *Redis) halt() {
	if r.stop != nil {
		r.stop()
		<-r.done
		r.stop = nil
	}
}

func (r *Redis) markDirty() {
	r.dirty.Store(true)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Redis) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(r.hb)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
		wait := r.hb
		if err := r.beat(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Redis may come back empty or from an old snapshot: resync then.
			r.dirty.Store(true)
			if !failing {
				r.log.Warn("presence heartbeat failed; retrying", zap.Error(err))
			}
			failing, wait = true, retryInterval
		} else if failing {
			failing = false
			r.log.Info("presence heartbeat recovered")
		}
		t.Reset(wait)
	}
}

// beat refreshes the registration and reaps expired nodes; when this node
// was missing or expired, or its state is in doubt, it resyncs.
func (r *Redis) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(r.ttlMs)*time.Millisecond/2)
	defer cancel()
	more := int64(1)
	for i := 0; more == 1 && i <= maxReapCalls; i++ {
		res, err := heartbeatScript.Run(ctx, r.client, r.keys[:3], r.prefix, r.node, r.ttlMs, drainBudget).Int64Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		if i == 0 && res[0] == 0 && !r.dirty.Load() {
			r.log.Warn("presence: node was missing or expired in Redis; restoring it from the local view")
			r.dirty.Store(true)
		}
		more = res[1]
	}
	return r.resync(ctx)
}

// resync replaces the node's Redis state with the local mirror if it is dirty.
func (r *Redis) resync(ctx context.Context) error {
	if !r.dirty.Load() {
		return nil
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	if r.closed {
		return nil
	}
	r.dirty.Store(false) // Add and Remove wait for gate: none can dirty it meanwhile
	r.mu.Lock()
	pairs := make([]any, 0, 2*len(r.local))
	for c, u := range r.local {
		pairs = append(pairs, c, u)
	}
	r.mu.Unlock()
	err := r.load(ctx)
	if err == nil {
		err = r.syncChunks(ctx, "reset", pairs)
	}
	if err != nil {
		r.dirty.Store(true)
		return fmt.Errorf("resync: %w", err)
	}
	r.log.Info("presence resynced", zap.Int("connections", len(pairs)/2))
	return nil
}

// load caches the scripts in Redis (it may have restarted empty), so that
// every Add and Remove is one EVALSHA.
func (r *Redis) load(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return err
		}
	}
	return nil
}

// syncChunks runs the sync script in mode, then in mode "add" for further chunks
// of pairs (conn, user, ...); gate must be held exclusively.
func (r *Redis) syncChunks(ctx context.Context, mode string, pairs []any) error {
	for {
		n := min(len(pairs), 2*syncChunk)
		args := append([]any{r.prefix, r.node, r.ttlMs, mode, drainBudget}, pairs[:n]...)
		ok, err := syncScript.Run(ctx, r.client, r.keys, args...).Int64()
		if err != nil {
			return err
		}
		if ok == 0 { // old entries not drained yet; nothing was applied
			continue
		}
		if pairs = pairs[n:]; len(pairs) == 0 {
			return nil
		}
		mode = "add"
	}
}
