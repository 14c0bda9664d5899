package node

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"
)

// limits protect a node from floods: too many new connections at once (a
// reconnect storm), too many connections that never authenticate, and
// sockets that send events faster than any guide client would. Each refusal
// is visible to the client and counted.
type limits struct {
	connect    *rate.Limiter // nil: no connection-rate cap
	eventRate  rate.Limit    // 0: no per-socket event cap
	eventBurst int
}

func newLimits(o Options) limits {
	l := limits{eventRate: rate.Limit(o.EventRate), eventBurst: o.EventBurst}
	if o.ConnectRate > 0 {
		burst := o.ConnectBurst
		if burst <= 0 {
			burst = max(1, int(2*o.ConnectRate))
		}
		l.connect = rate.NewLimiter(rate.Limit(o.ConnectRate), burst)
	}
	if l.eventRate > 0 && l.eventBurst <= 0 {
		l.eventBurst = max(1, int(4*o.EventRate))
	}
	return l
}

// admitConnection decides whether a new session may start; a refused client
// gets 429 with Retry-After and retries with its reconnection backoff.
func (n *Node) admitConnection(c *gin.Context) bool {
	refuse := func(limit, message string) bool {
		n.metrics.rateLimited.WithLabelValues(limit).Inc()
		c.Header("Retry-After", "1")
		c.AbortWithStatusJSON(http.StatusTooManyRequests, gin.H{"code": eioForbidden, "message": message})
		return false
	}
	if l := n.limits.connect; l != nil && !l.Allow() {
		return refuse("connect_rate", "Too many new connections, retry shortly")
	}
	if max := n.opts.MaxUnauthenticated; max > 0 {
		n.mu.Lock()
		unauthenticated := len(n.sessions) - len(n.authed)
		n.mu.Unlock()
		if unauthenticated >= max {
			return refuse("unauthenticated", "Too many unauthenticated connections, retry shortly")
		}
	}
	return true
}

// eventLimiter is one socket's allowance: events spend tokens; refusals
// spend strikes, which refill at the same pace. A client that bursts gets
// errors and stays; one that keeps flooding runs out of strikes and is
// disconnected.
type eventLimiter struct {
	events, strikes *rate.Limiter
}

// allowEvent reports whether the socket may send this event. A refused event
// is answered with an `error` event (and its ack); persistent excess ends
// the connection with a DISCONNECT, so the client does not reconnect in a loop.
func (s *socket) allowEvent(ackID int64) bool {
	l := s.n.limits
	if l.eventRate == 0 {
		return true
	}
	s.mu.Lock()
	if s.limiter == nil { // allocated on the first event: most sockets send one
		s.limiter = &eventLimiter{
			events:  rate.NewLimiter(l.eventRate, l.eventBurst),
			strikes: rate.NewLimiter(l.eventRate, l.eventBurst),
		}
	}
	lim := s.limiter
	s.mu.Unlock()
	now := time.Now()
	if lim.events.AllowN(now, 1) {
		return true
	}
	s.n.metrics.rateLimited.WithLabelValues("event").Inc()
	if !lim.strikes.AllowN(now, 1) {
		s.n.metrics.rateLimitDisconnects.Add(1)
		s.emit("error", errorPayload{Error: "Rate limit exceeded: disconnected", Code: "RATE_LIMITED", stamped: stamped{timestamp(now)}})
		s.disconnect(true)
		return false
	}
	s.emit("error", errorPayload{Error: "Rate limit exceeded", Code: "RATE_LIMITED", stamped: stamped{timestamp(now)}})
	s.ack(ackID, failAck{Error: "Rate limit exceeded"})
	return false
}
