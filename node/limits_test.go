package node

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestEventRateLimit(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.EventRate = 1
		o.EventBurst = 3
	})
	c := tn.authed(t, "flooder", "") // authenticate spends one token
	other := tn.authed(t, "calm", "")
	const unknown = `42["error",{"error":"Unknown event: x","code":"UNKNOWN_EVENT","timestamp":"TS"}]`
	const limited = `42["error",{"error":"Rate limit exceeded","code":"RATE_LIMITED","timestamp":"TS"}]`
	c.send(`42["x"]`)
	c.send(`42["x"]`)
	c.expectTS(unknown)
	c.expectTS(unknown)
	// The burst is spent: a refusal, acked when asked.
	c.send(`427["x"]`)
	c.expectTS(limited)
	c.expect(`437[{"ok":false,"error":"Rate limit exceeded"}]`)
	// Persistent excess runs out of strikes: a DISCONNECT, then the close.
	c.send(`42["x"]`)
	c.send(`42["x"]`)
	c.expectTS(limited)
	c.expectTS(limited)
	c.send(`42["x"]`)
	c.expectTS(`42["error",{"error":"Rate limit exceeded: disconnected","code":"RATE_LIMITED","timestamp":"TS"}]`)
	c.expect("41")
	c.expectClosed()
	if got := metricValue(t, tn, `hubnode_rate_limited_total{limit="event"}`); got != "4" {
		t.Errorf("event refusals = %s, want 4", got)
	}
	if got := metricValue(t, tn, "hubnode_rate_limit_disconnects_total"); got != "1" {
		t.Errorf("rate-limit disconnects = %s, want 1", got)
	}
	// Another socket's allowance is its own.
	other.send(`42["x"]`)
	other.expectTS(unknown)
}

func TestEventRateRefills(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.EventRate = 20
		o.EventBurst = 1
	})
	c := tn.authed(t, "u", "")
	// One event every 100 ms stays under 20/s: never refused.
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		c.send(`42["x"]`)
		c.expectTS(`42["error",{"error":"Unknown event: x","code":"UNKNOWN_EVENT","timestamp":"TS"}]`)
	}
}

func TestConnectRateLimit(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.ConnectRate = 0.5 // one new connection every 2 s
		o.ConnectBurst = 2
	})
	tn.connect(t)
	tn.connect(t)
	conn, resp, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil)
	if err == nil {
		_ = conn.Close()
		t.Fatal("a third connection within the burst was accepted")
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q; want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if body := respBody(t, resp); !strings.Contains(body, "Too many new connections") {
		t.Errorf("body %s", body)
	}
	// Polling handshakes count too; requests on an existing session do not.
	r := tn.do(t, http.MethodGet, "/socket.io/?EIO=4&transport=polling", "", "", nil)
	if r.status != http.StatusTooManyRequests {
		t.Errorf("polling handshake: %d, want 429", r.status)
	}
	if got := metricValue(t, tn, `hubnode_rate_limited_total{limit="connect_rate"}`); got != "2" {
		t.Errorf("connect refusals = %s, want 2", got)
	}
}

func TestMaxUnauthenticated(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.MaxUnauthenticated = 2 })
	a := tn.connect(t)
	tn.connect(t)
	if _, resp, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third unauthenticated connection: err %v, want 429", err)
	}
	// Once one of them authenticates, there is room again.
	a.authenticate(mustToken(t, "u", "", time.Hour), "u", "")
	tn.authed(t, "v", "")
	if got := metricValue(t, tn, `hubnode_rate_limited_total{limit="unauthenticated"}`); got != "1" {
		t.Errorf("unauthenticated refusals = %s, want 1", got)
	}
}
