// Package presence records which users are connected, and where. The memory
// implementation serves a single node; the Redis one answers for a cluster.
package presence

import "context"

// Stats are connection figures. TotalConnections counts authenticated
// connections; AuthenticatedUsers counts distinct users among them.
type Stats struct {
	TotalConnections          int         `json:"totalConnections"`
	AuthenticatedUsers        int         `json:"authenticatedUsers"`
	AverageConnectionsPerUser float64     `json:"averageConnectionsPerUser"`
	Nodes                     []NodeStats `json:"nodes,omitempty"`
}

// NodeStats are one node's own figures within a cluster.
type NodeStats struct {
	NodeID             string `json:"nodeId"`
	Connections        int    `json:"connections"`
	AuthenticatedUsers int    `json:"authenticatedUsers"`
}

// Presence tracks authenticated connections by user.
type Presence interface {
	// Add records connection connID of userID.
	Add(ctx context.Context, userID, connID string) error
	// Remove forgets connection connID of userID.
	Remove(ctx context.Context, userID, connID string) error
	// UserConnections returns how many connections userID has.
	UserConnections(ctx context.Context, userID string) (int, error)
	// Stats returns the figures of everything this Presence sees.
	Stats(ctx context.Context) (Stats, error)
	// Close releases resources.
	Close() error
}

// Average returns connections per user rounded to two decimals, 0 with no users.
func Average(conns, users int) float64 {
	if users == 0 {
		return 0
	}
	return float64(int64(float64(conns)/float64(users)*100+0.5)) / 100
}
