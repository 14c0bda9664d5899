package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/messaging-hub/hubnode/adapter"
)

// metrics are the node's counters. Hot-path counters are plain atomics,
// read by Prometheus at scrape time, so a delivery pays one atomic add;
// labelled ones are Prometheus vectors touched once per emit, not per socket.
type metrics struct {
	deliveries           atomic.Int64
	emitFailures         atomic.Int64
	protocolErrors       atomic.Int64
	slowConsumers        atomic.Int64
	panics               atomic.Int64
	upgrades             atomic.Int64
	originRefused        atomic.Int64
	connectionsRefused   atomic.Int64
	rateLimitDisconnects atomic.Int64
	replayed             atomic.Int64

	emits        *prometheus.CounterVec // by door and event
	delivered    *prometheus.CounterVec // by origin and event
	authFailures *prometheus.CounterVec // by reason
	rateLimited  *prometheus.CounterVec // by limit
	recoveries   *prometheus.CounterVec // by outcome
	httpLatency  *prometheus.HistogramVec

	registry *prometheus.Registry
}

// knownLabels bound the event label: other names are counted as "other".
// Each maps to itself, so that a lookup by bytes returns the label without
// allocating it.
var knownLabels = map[string]string{
	EventNewMessage: EventNewMessage, EventMessageStatusUpdate: EventMessageStatusUpdate,
	EventUnreadCountUpdate: EventUnreadCountUpdate, EventConversationUpdate: EventConversationUpdate,
	EventError: EventError, "authenticated": "authenticated", "auth_error": "auth_error",
}

func eventLabel(name string) string {
	if label, ok := knownLabels[name]; ok {
		return label
	}
	return "other"
}

// eventLabelOf is eventLabel of a JSON event name. A name without escapes
// is looked up as it stands, without decoding (nor allocating): this runs
// for every delivered broadcast.
func eventLabelOf(raw json.RawMessage) string {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		if label, ok := knownLabels[string(raw[1:n-1])]; ok {
			return label
		}
		return "other"
	}
	var name string
	_ = json.Unmarshal(raw, &name)
	return eventLabel(name)
}

// init registers every metric on the node's own registry (several nodes
// may live in one process, as in tests).
func (m *metrics) init(n *Node) {
	r := prometheus.NewRegistry()
	m.registry = r
	m.emits = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubnode_emits_total",
		Help: "Emits accepted by this node, by door (go, http) and event."}, []string{"door", "event"})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubnode_broadcasts_total",
		Help: "Broadcasts delivered to this node's sockets, by origin (local emit or redis) and event."}, []string{"origin", "event"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubnode_auth_failures_total",
		Help: "Refused authentications, by reason."}, []string{"reason"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubnode_rate_limited_total",
		Help: "Refusals by a rate limit: connect_rate, unauthenticated, event."}, []string{"limit"})
	m.recoveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubnode_recoveries_total",
		Help: "Connection-state recoveries: accepted (offset still kept), refused (fresh session), lost (history gone before authentication)."}, []string{"outcome"})
	m.httpLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hubnode_http_request_duration_seconds",
		Help: "Latency of the HTTP API and health endpoints.", Buckets: prometheus.DefBuckets}, []string{"route", "method", "code"})
	r.MustRegister(m.emits, m.delivered, m.authFailures, m.rateLimited, m.recoveries, m.httpLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	gauge := func(name, help string, f func() float64) {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, v *atomic.Int64) {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) }))
	}
	gauge("hubnode_connections", "Open Engine.IO connections on this node, authenticated or not.", func() float64 { return float64(n.open.Load()) })
	gauge("hubnode_authenticated_users", "Distinct authenticated users on this node.", func() float64 { return float64(n.users.Load()) })
	gauge("hubnode_authenticated_connections", "Authenticated sockets on this node.", func() float64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return float64(len(n.authed))
	})
	counter("hubnode_deliveries_total", "Frames written to sockets (one per socket per broadcast).", &m.deliveries)
	counter("hubnode_emit_failures_total", "Emits that could not reach other nodes (Redis unusable).", &m.emitFailures)
	counter("hubnode_protocol_errors_total", "Connections closed for a malformed packet.", &m.protocolErrors)
	counter("hubnode_slow_consumers_total", "Connections closed because their write queue was full.", &m.slowConsumers)
	counter("hubnode_panics_total", "Panics recovered in handlers.", &m.panics)
	counter("hubnode_upgrades_total", "Polling sessions upgraded to WebSocket.", &m.upgrades)
	counter("hubnode_origin_refused_total", "Requests refused for a disallowed Origin.", &m.originRefused)
	counter("hubnode_connections_refused_total", "Connections refused at MAX_CONNECTIONS.", &m.connectionsRefused)
	counter("hubnode_rate_limit_disconnects_total", "Sockets disconnected for flooding events.", &m.rateLimitDisconnects)
	counter("hubnode_replayed_total", "Missed events replayed to recovered sockets.", &m.replayed)

	if rs, ok := n.adapter.(interface{ Stats() *adapter.RedisStats }); ok {
		st := rs.Stats()
		counter("hubnode_redis_published_total", "PUBLISHes of broadcasts and requests.", &st.Published)
		counter("hubnode_redis_publish_errors_total", "PUBLISHes that failed or were refused while Redis was unusable.", &st.PublishErrors)
		counter("hubnode_redis_received_total", "Broadcasts received from Redis.", &st.Received)
		counter("hubnode_redis_dropped_total", "Messages from Redis dropped as undecodable or unsupported.", &st.Dropped)
		counter("hubnode_redis_reconnects_total", "Pub/sub connections re-established.", &st.Reconnects)
		counter("hubnode_emitter_recorded_total", "redis-emitter broadcasts this node recorded into history as the cluster's recorder.", &st.Recorded)
		counter("hubnode_emitter_record_errors_total", "redis-emitter broadcasts the recorder failed to record.", &st.RecordErrors)
		counter("hubnode_emitter_held_total", "redis-emitter broadcasts held for the recorder's copy with an offset.", &st.RelayHeld)
		counter("hubnode_emitter_relay_timeouts_total", "Held redis-emitter broadcasts delivered without an offset: the recorder's copy did not come in time.", &st.RelayTimeouts)
		gauge("hubnode_redis_pubsub_lag_seconds", "Round trip of the latest probe through Redis pub/sub.", func() float64 {
			return time.Duration(st.ProbeRTT.Load()).Seconds()
		})
	}
}

func (m *metrics) emitted(door, event string) {
	m.emits.WithLabelValues(door, eventLabel(event)).Inc()
}

func (m *metrics) authFailure(reason string) {
	m.authFailures.WithLabelValues(reason).Inc()
}

// broadcast counts one broadcast delivered to delivered local sockets.
func (m *metrics) broadcast(msg *adapter.Message, delivered int) {
	m.deliveries.Add(int64(delivered))
	origin := "redis"
	if msg.Frame != nil {
		origin = "local"
	}
	label := "other"
	if len(msg.Data) > 0 {
		label = eventLabelOf(msg.Data[0])
	}
	m.delivered.WithLabelValues(origin, label).Inc()
}

// observeHTTP times the API and health routes (not the Socket.IO endpoint,
// whose WebSocket requests last as long as the connection).
func (m *metrics) observeHTTP(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	m.httpLatency.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status()/100)+"xx").Observe(time.Since(start).Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
