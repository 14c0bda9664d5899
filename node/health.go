package node

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/messaging-hub/hubnode/presence"
)

// healthTimeout bounds the checks behind one health request.
const healthTimeout = 2 * time.Second

type websocketHealth struct {
	Status             string `json:"status"`
	Connections        int64  `json:"connections"`
	AuthenticatedUsers int64  `json:"authenticatedUsers"`
}

type healthReport struct {
	Status    string          `json:"status"`
	Timestamp string          `json:"timestamp"`
	NodeID    string          `json:"nodeId"`
	Services  healthServices  `json:"services"`
	Cluster   *presence.Stats `json:"cluster,omitempty"`
}

type healthServices struct {
	Redis     string          `json:"redis"`
	Websocket websocketHealth `json:"websocket"`
}

// health serves the guide's /health: this node's WebSocket figures and the
// state of Redis. It answers 503 when the node should take no traffic.
func (n *Node) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c, healthTimeout)
	defer cancel()
	rep := healthReport{
		Status:    "ok",
		Timestamp: timestamp(time.Now()),
		NodeID:    n.opts.NodeID,
		Services: healthServices{
			Redis: "disabled",
			Websocket: websocketHealth{
				Status:             "active",
				Connections:        n.open.Load(),
				AuthenticatedUsers: n.users.Load(),
			},
		},
	}
	if n.opts.Redis != nil { // cluster mode: Redis state and cluster-wide figures
		rep.Services.Redis = "connected"
		if err := n.opts.Redis.Healthy(ctx); err != nil {
			rep.Services.Redis = "disconnected"
			rep.Status = "degraded"
		} else if st, err := n.presence.Stats(ctx); err == nil {
			rep.Cluster = &st
		}
	}
	if n.shutting.Load() {
		rep.Status = "shutting_down"
		rep.Services.Websocket.Status = "draining"
	}
	code := http.StatusOK
	if rep.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	c.JSON(code, rep)
}

// live says the process serves HTTP; orchestrators restart it otherwise.
func (n *Node) live(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// ready says the node should receive new connections: not shutting down,
// and Redis usable in cluster mode.
func (n *Node) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c, healthTimeout)
	defer cancel()
	if err := n.Ready(ctx); err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "not ready", "reason": err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}
