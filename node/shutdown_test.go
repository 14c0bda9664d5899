package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// --- 12. Shutdown ---

func TestShutdownClosesTransportsWithoutDisconnect(t *testing.T) {
	tn := newTestNode(t, nil)
	clients := []*wsClient{
		tn.authed(t, "u1", "e@x"),
		tn.authed(t, "u1", "e@x"),
		tn.authed(t, "u2", "f@x"),
		tn.connect(t),   // connected, not authenticated
		tn.dial(t, nil), // Engine.IO only
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := tn.n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	// Each client sees the WebSocket close, and no frame before it: in
	// particular no 41, which would stop socket.io-client from reconnecting.
	for i, c := range clients {
		f, err := c.nextWithin(readTimeout)
		if err == nil {
			t.Errorf("client %d: got %s before the close, want none", i, f)
			continue
		}
		if !errors.Is(err, errClosed) {
			t.Errorf("client %d: %v, want the connection closed", i, err)
		}
	}
	if open := tn.n.open.Load(); open != 0 {
		t.Errorf("%d sessions left after Shutdown", open)
	}
	if st, _ := tn.n.Service().GetStats(context.Background()); st.TotalConnections != 0 || st.AuthenticatedUsers != 0 {
		t.Errorf("stats after Shutdown: %+v", st)
	}
	if err := tn.n.Ready(context.Background()); err == nil {
		t.Error("Ready reports nil after Shutdown")
	}
	expectStatus(t, "ready after Shutdown", tn.do(t, http.MethodGet, "/health/ready", "", "", nil),
		http.StatusServiceUnavailable, "")

	// New connections are refused.
	conn, resp, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil)
	if err == nil {
		_ = conn.Close()
		t.Fatal("a new connection was accepted after Shutdown")
	}
	if !errors.Is(err, websocket.ErrBadHandshake) || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Shutdown: %v (%v), want 503", err, resp)
	}
	// A second Shutdown says so.
	if err := tn.n.Shutdown(ctx); !errors.Is(err, errShuttingDown) {
		t.Errorf("second Shutdown: %v, want errShuttingDown", err)
	}
}

func TestShutdownWithoutSessions(t *testing.T) {
	tn := newTestNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := tn.n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	expectStatus(t, "ready", tn.do(t, http.MethodGet, "/health/ready", "", "", nil), http.StatusServiceUnavailable, "")
}

// TestShutdownWhileLastSessionEnds closes the last session exactly while
// Shutdown starts: the session's untrack runs after Shutdown has set the
// shutting flag but before it takes n.mu. Both then see no session left and
// both close n.drained.
func TestShutdownWhileLastSessionEnds(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.dial(t, nil) // an Engine.IO session without socket: its close only needs n.mu in untrack
	eventually(t, "the session to be tracked", func() bool { return tn.n.open.Load() == 1 })

	tn.n.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			tn.n.mu.Unlock()
		}
	}
	defer unlock()

	// 1. The client goes away; the server's disconnect handler blocks in
	//    untrack, waiting for n.mu.
	_ = c.conn.Close()
	time.Sleep(100 * time.Millisecond)

	// 2. Shutdown starts: it sets the shutting flag, then waits for n.mu
	//    (behind untrack).
	result := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				result <- fmt.Errorf("Shutdown panicked: %v", r)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		result <- tn.n.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)

	// 3. The lock is released: untrack (queued first) removes the last session.
	unlock()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}
