// Package node is one hubnode: the HTTP routes, the Engine.IO transports,
// the Socket.IO sockets and their user index, authentication, the emit
// service (Go and HTTP) and health. It reaches other nodes only through the
// adapter and presence interfaces.
package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"
	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/presence"
)

// Options configure a Node. Zero values take the defaults stated per field.
type Options struct {
	// NodeID names this node in logs, stats and the cluster. Default "hubnode".
	NodeID string
	// Path is the Engine.IO endpoint, served with and without its trailing
	// slash. Default "/socket.io/".
	Path string
	// AllowedOrigins are the browser origins allowed to connect (CORS and the
	// WebSocket Origin check); "*" allows any. Empty allows none, but clients
	// without an Origin header (servers, mobile apps) are always allowed.
	AllowedOrigins []string
	// Auth configures token verification: one of Auth.Secret,
	// Auth.PublicKeyFile and Auth.JWKSURL is required.
	Auth AuthOptions
	// AuthTimeout is how long a new connection may stay unauthenticated. Default 10s.
	AuthTimeout time.Duration
	// PingInterval and PingTimeout drive the Engine.IO heartbeat. Default 25s and 20s.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// MaxPayload bounds one inbound message in bytes. Default 1,000,000.
	MaxPayload int64
	// APIKey guards the HTTP API; empty disables the API (503), never opens it.
	APIKey string
	// WriteQueue is the size of melody's write queue per connection; a burst
	// beyond three quarters of it is held and paced (see deliver). Default 32.
	WriteQueue int
	// MaxConnections caps this node's open connections. Zero means no cap.
	MaxConnections int
	// ConnectRate caps new connections per second, with ConnectBurst
	// (default twice the rate) at once. Zero means no cap.
	ConnectRate  float64
	ConnectBurst int
	// MaxUnauthenticated caps connections not yet authenticated. Zero means no cap.
	MaxUnauthenticated int
	// EventRate caps the events per second one socket may send, with
	// EventBurst (default four times the rate) at once. Zero means no cap.
	EventRate  float64
	EventBurst int
	// RecoveryWindow turns on connection-state recovery: emits to a user
	// are kept this long (in the adapter's history) so a client that
	// reconnects within it receives what it missed. Zero turns it off.
	RecoveryWindow time.Duration
	// HistoryMaxLen bounds the events kept per user. Default 500.
	HistoryMaxLen int
	// Adapter moves emits between nodes. Default: a single-node memory
	// adapter, keeping history when RecoveryWindow is set.
	Adapter adapter.Adapter
	// Presence records connected users. Default: in-memory for this node.
	Presence presence.Presence
	// Redis reports the Redis connection for /health; nil means single-node
	// mode, shown as "disabled".
	Redis HealthChecker
	// Logger receives the node's logs. Default: no logging.
	Logger *zap.Logger
}

// HealthChecker reports whether the node's Redis link is usable;
// *adapter.Redis is one.
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

func (o *Options) setDefaults() {
	if o.NodeID == "" {
		o.NodeID = "hubnode"
	}
	if o.Path == "" {
		o.Path = "/socket.io/"
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = 10 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 20 * time.Second
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 1_000_000
	}
	if o.WriteQueue <= 0 {
		o.WriteQueue = 32
	}
	if o.HistoryMaxLen <= 0 {
		o.HistoryMaxLen = 500
	}
	if o.Adapter == nil {
		o.Adapter = adapter.NewMemoryWith(adapter.MemoryOptions{HistoryWindow: o.RecoveryWindow, HistoryMaxLen: o.HistoryMaxLen})
	}
	if o.Presence == nil {
		o.Presence = presence.NewMemory(o.NodeID)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Node serves Socket.IO clients and the emit API.
type Node struct {
	opts     Options
	log      *zap.Logger
	verifier *verifier
	adapter  adapter.Adapter
	presence presence.Presence
	melody   *melody.Melody
	rooms    *roomIndex
	metrics  metrics
	origins  originPolicy
	service  *Service
	limits   limits
	app      app
	// engineEcho makes the node a bare Engine.IO echo (conformance suite).
	engineEcho bool

	shutting atomic.Bool
	// open counts engine sessions; users counts distinct local users.
	open  atomic.Int64
	users atomic.Int64

	mu       sync.Mutex
	sessions map[*engineSession]struct{}
	bySID    map[string]*engineSession
	authed   map[*socket]struct{}
	drained  chan struct{} // closed when shutting down and no session is left
}

// New returns a node; call Start before serving its Handler.
func New(opts Options) (*Node, error) {
	if err := opts.Auth.validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	v, err := newVerifier(opts.Auth, opts.Logger)
	if err != nil {
		return nil, err
	}
	n := &Node{
		opts:     opts,
		log:      opts.Logger,
		verifier: v,
		adapter:  opts.Adapter,
		presence: opts.Presence,
		rooms:    newRoomIndex(),
		origins:  newOriginPolicy(opts.AllowedOrigins),
		sessions: make(map[*engineSession]struct{}),
		bySID:    make(map[string]*engineSession),
		authed:   make(map[*socket]struct{}),
		drained:  make(chan struct{}),
	}
	n.service = &Service{n: n}
	n.limits = newLimits(opts)
	n.app = hubApp{n}
	n.melody = n.newMelody()
	n.metrics.init(n)
	return n, nil
}

// Start connects the node to its adapter.
func (n *Node) Start(ctx context.Context) error {
	return n.adapter.Start(ctx, n)
}

// Service returns the emit API of the node.
func (n *Node) Service() *Service { return n.service }

// Ready reports whether the node should receive new connections.
func (n *Node) Ready(ctx context.Context) error {
	if n.shutting.Load() {
		return errShuttingDown
	}
	if n.opts.Redis != nil {
		if err := n.opts.Redis.Healthy(ctx); err != nil {
			return err
		}
	}
	return nil
}

var errShuttingDown = errors.New("node is shutting down")

// closedLinger is how long a closed session's id still answers requests.
const closedLinger = time.Second

// Shutdown stops accepting connections and closes every transport without a
// Socket.IO DISCONNECT, so clients reconnect (to another replica behind a
// load balancer). It returns when all sessions have ended or ctx is done, in
// which case the remaining connections are cut.
func (n *Node) Shutdown(ctx context.Context) error {
	if !n.shutting.CompareAndSwap(false, true) {
		return errShuttingDown
	}
	n.mu.Lock()
	left := make([]*engineSession, 0, len(n.sessions))
	for e := range n.sessions {
		left = append(left, e)
	}
	n.closeDrainedLocked()
	n.mu.Unlock()
	n.log.Info("shutting down: closing transports", zap.Int("sessions", len(left)))
	for _, e := range left {
		e.close(reasonServerShutdown)
	}
	_ = n.melody.Close()
	select {
	case <-n.drained:
		return nil
	case <-ctx.Done():
		n.log.Warn("shutdown timeout: cutting remaining connections")
		n.mu.Lock()
		for e := range n.sessions {
			e.tr.abort()
		}
		n.mu.Unlock()
		return ctx.Err()
	}
}

// track registers an open engine session; it fails when the node is full or closing.
func (n *Node) track(e *engineSession) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.shutting.Load() {
		return false
	}
	n.sessions[e] = struct{}{}
	n.bySID[e.id] = e
	n.open.Add(1)
	return true
}

// lookup finds an open session by its Engine.IO id.
func (n *Node) lookup(sid string) *engineSession {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bySID[sid]
}

func (n *Node) untrack(e *engineSession) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.sessions[e]; !ok {
		return
	}
	delete(n.sessions, e)
	n.open.Add(-1)
	// A closed session stays findable a moment, so a request racing its
	// close gets the transport's last word (a close packet or a noop)
	// rather than "Session ID unknown".
	time.AfterFunc(closedLinger, func() {
		n.mu.Lock()
		if n.bySID[e.id] == e {
			delete(n.bySID, e.id)
		}
		n.mu.Unlock()
	})
	if n.shutting.Load() {
		n.closeDrainedLocked()
	}
}

// closeDrainedLocked signals the end of the drain once no session is left;
// Shutdown and the last untrack may race to it. n.mu must be held.
func (n *Node) closeDrainedLocked() {
	if len(n.sessions) > 0 {
		return
	}
	select {
	case <-n.drained:
	default:
		close(n.drained)
	}
}
