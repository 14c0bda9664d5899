package node

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// Handler returns the node's HTTP handler: the Socket.IO endpoint, health
// and the HTTP API.
func (n *Node) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// A redirect would break WebSocket upgrades: serve both spellings instead.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.Use(n.recovery, n.requestLog)

	base := strings.TrimSuffix(n.opts.Path, "/")
	for _, path := range []string{base + "/", base} {
		r.Any(path, n.cors, n.serveEngine) // cors answers OPTIONS itself
	}
	r.GET("/health", n.metrics.observeHTTP, n.health)
	r.GET("/health/live", n.metrics.observeHTTP, n.live)
	r.GET("/health/ready", n.metrics.observeHTTP, n.ready)
	r.GET("/metrics", gin.WrapH(n.metrics.handler()))
	n.routeAPI(r.Group("/api/v1", n.metrics.observeHTTP))
	r.NoRoute(func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "not found"}) })
	return r
}

// Engine.IO error codes and messages, as Node's engine.io answers them.
const (
	eioTransportUnknown   = 0
	eioUnknownSID         = 1
	eioBadHandshakeMethod = 2
	eioBadRequest         = 3
	eioForbidden          = 4
	eioUnsupportedVersion = 5
)

var eioMessages = [...]string{"Transport unknown", "Session ID unknown", "Bad handshake method", "Bad request", "Forbidden", "Unsupported protocol version"}

func engineError(c *gin.Context, code int) {
	writeEngineError(c.Writer, code)
	c.Abort()
}

// writeEngineError answers an Engine.IO request error as Node does: JSON
// {code, message}, 403 for Forbidden and 400 otherwise.
func writeEngineError(w http.ResponseWriter, code int) {
	status := http.StatusBadRequest
	if code == eioForbidden {
		status = http.StatusForbidden
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"code":%d,"message":%q}`, code, eioMessages[code])
}

// serveEngine is the Engine.IO endpoint: WebSocket and HTTP long-polling
// handshakes, polling requests, and upgrades of polling sessions.
func (n *Node) serveEngine(c *gin.Context) {
	r := c.Request
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		engineError(c, eioUnsupportedVersion)
		return
	}
	transport, sid := q.Get("transport"), q.Get("sid")
	if transport != "websocket" && transport != "polling" {
		engineError(c, eioTransportUnknown)
		return
	}
	if origin := c.GetHeader("Origin"); origin != "" && !n.origins.allows(origin) {
		n.metrics.originRefused.Add(1)
		engineError(c, eioForbidden)
		return
	}
	if sid == "" { // a new session
		if r.Method != http.MethodGet {
			engineError(c, eioBadHandshakeMethod)
			return
		}
		if n.shutting.Load() {
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"code": eioForbidden, "message": "Server is shutting down"})
			return
		}
		if max := n.opts.MaxConnections; max > 0 && n.open.Load() >= int64(max) {
			n.metrics.connectionsRefused.Add(1)
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"code": eioForbidden, "message": "Too many connections"})
			return
		}
		if !n.admitConnection(c) {
			return
		}
	}
	if transport == "polling" {
		n.servePolling(c.Writer, r, sid)
		return
	}
	var upgrading *engineSession
	refuse := false
	if sid != "" {
		if upgrading = n.lookup(sid); upgrading == nil {
			engineError(c, eioUnknownSID)
			return
		}
		// Already on WebSocket, or probing one: this one is closed at once.
		refuse = !upgrading.canUpgrade()
	}
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) {
		engineError(c, eioBadRequest)
		return
	}
	n.serveWebSocket(c.Writer, r, upgrading, refuse)
}

// originPolicy decides which browser origins may connect.
type originPolicy struct {
	any     bool
	allowed map[string]bool
}

func newOriginPolicy(origins []string) originPolicy {
	p := originPolicy{allowed: make(map[string]bool)}
	for _, o := range origins {
		o = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/")
		if o == "*" {
			p.any = true
		}
		p.allowed[o] = true
	}
	return p
}

func (p originPolicy) allows(origin string) bool {
	return p.any || p.allowed[strings.ToLower(origin)]
}

// cors applies the guide's CORS policy: the exact origin reflected with
// credentials, never "*", and only for allowed origins.
func (n *Node) cors(c *gin.Context) {
	origin := c.GetHeader("Origin")
	if origin != "" && n.origins.allows(origin) {
		h := c.Writer.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
		if c.Request.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET,POST,OPTIONS")
			if req := c.GetHeader("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	if c.Request.Method == http.MethodOptions {
		c.AbortWithStatus(http.StatusNoContent)
	}
}

// requestLog logs each request without its query string, where Socket.IO
// clients may carry tokens.
func (n *Node) requestLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	path := c.Request.URL.Path
	level := zap.InfoLevel
	if strings.HasPrefix(path, "/health") {
		level = zap.DebugLevel
	}
	if ce := n.log.Check(level, "http request"); ce != nil {
		ce.Write(
			zap.String("method", c.Request.Method),
			zap.String("path", path),
			zap.Int("status", c.Writer.Status()),
			zap.Duration("duration", time.Since(start)),
			zap.String("remote", c.ClientIP()),
		)
	}
}

// recovery turns a handler panic into a logged 500.
func (n *Node) recovery(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			n.metrics.panics.Add(1)
			n.log.Error("panic in HTTP handler", zap.String("path", c.Request.URL.Path), zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
			if !c.Writer.Written() {
				c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
			}
		}
	}()
	c.Next()
}
