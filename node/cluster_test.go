package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/messaging-hub/hubnode/adapter/redistest"
	"github.com/messaging-hub/hubnode/presence"
)

// newClusterNode starts a node on the given Redis with the Redis adapter and
// presence, as cmd/hubnode wires them, with short timings for tests.
func newClusterNode(t *testing.T, rs *redistest.Server, id string) *testNode {
	return newClusterNodeWith(t, rs, id, nil)
}

func newClusterNodeWith(t *testing.T, rs *redistest.Server, id string, mod func(*Options)) *testNode {
	t.Helper()
	var probe Options
	if mod != nil {
		mod(&probe)
	}
	client := redis.NewClient(&redis.Options{Addr: rs.Addr(), MaxRetries: 1, DialTimeout: time.Second})
	ad, err := adapter.NewRedis(adapter.RedisOptions{Client: client, UnsubscribeDelay: 100 * time.Millisecond, ProbeInterval: 200 * time.Millisecond,
		HistoryWindow: probe.RecoveryWindow})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := presence.NewRedis(presence.RedisOptions{Client: client, NodeID: id, Heartbeat: 200 * time.Millisecond, NodeTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Registered before the node's own cleanup, so it runs after Shutdown.
	t.Cleanup(func() {
		_ = pr.Close()
		_ = ad.Close()
		_ = client.Close()
	})
	tn := newTestNode(t, func(o *Options) {
		if mod != nil {
			mod(o)
		}
		o.NodeID = id
		o.Adapter = ad
		o.Presence = pr
		o.Redis = ad
	})
	eventually(t, id+" ready", func() bool { return tn.n.Ready(context.Background()) == nil })
	return tn
}

func newCluster(t *testing.T, size int) (*redistest.Server, []*testNode) {
	return newClusterWith(t, size, nil)
}

func newClusterWith(t *testing.T, size int, mod func(*Options)) (*redistest.Server, []*testNode) {
	rs := redistest.Start(t)
	nodes := make([]*testNode, size)
	for i := range nodes {
		nodes[i] = newClusterNodeWith(t, rs, "n"+strconv.Itoa(i+1), mod)
	}
	return rs, nodes
}

func TestClusterGoAPIReachesEveryNode(t *testing.T) {
	_, ns := newCluster(t, 3)
	tab2 := ns[1].authed(t, "u1", "u1@x")
	tab3 := ns[2].authed(t, "u1", "u1@x")
	other := ns[0].authed(t, "u2", "u2@x")

	if err := ns[0].n.Service().EmitNewMessage(context.Background(), "u1", map[string]any{"id": "m1"}, nil); err != nil {
		t.Fatal(err)
	}
	tab2.expectTS(`42["new_message",{"message":{"id":"m1"},"timestamp":"TS"}]`)
	tab3.expectTS(`42["new_message",{"message":{"id":"m1"},"timestamp":"TS"}]`)

	// Isolation: u2 gets only its own marker, and the tabs no second copy.
	if err := ns[2].n.Service().Emit(context.Background(), "u2", "marker", 1); err != nil {
		t.Fatal(err)
	}
	other.expect(`42["marker",1]`)
	expectNothingAll(t, tab2, tab3)
}

func TestClusterStatsAndPresence(t *testing.T) {
	_, ns := newCluster(t, 3)
	ns[0].authed(t, "a", "")
	ns[1].authed(t, "a", "")
	ns[1].authed(t, "b", "")
	ns[2].authed(t, "c", "")
	ns[2].connect(t) // unauthenticated: not counted
	ctx := context.Background()
	for _, tn := range ns {
		st, err := tn.n.Service().GetStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%d %d %.2f %v", st.TotalConnections, st.AuthenticatedUsers, st.AverageConnectionsPerUser, st.Nodes)
		want := "4 3 1.33 [{n1 1 1} {n2 2 2} {n3 1 1}]"
		if got != want {
			t.Fatalf("stats on %s = %s, want %s", tn.n.opts.NodeID, got, want)
		}
	}
	if c, err := ns[2].n.Service().GetUserConnectionCount(ctx, "a"); err != nil || c != 2 {
		t.Fatalf("connections of a seen from n3 = %d, %v; want 2", c, err)
	}
	if ok, err := ns[0].n.Service().IsUserConnected(ctx, "c"); err != nil || !ok {
		t.Fatalf("c connected seen from n1 = %v, %v", ok, err)
	}
	if ok, _ := ns[0].n.Service().IsUserConnected(ctx, "nobody"); ok {
		t.Fatal("nobody is connected")
	}
}

func TestClusterDisconnectUserEverywhere(t *testing.T) {
	_, ns := newCluster(t, 3)
	tabs := []*wsClient{ns[1].authed(t, "u1", ""), ns[2].authed(t, "u1", "")}
	keep := ns[2].authed(t, "u2", "")
	if err := ns[0].n.Service().DisconnectUser(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range tabs {
		c.expect("41")
		c.expectClosed()
	}
	if err := ns[0].n.Service().Emit(context.Background(), "u2", "still", nil); err != nil {
		t.Fatal(err)
	}
	keep.expect(`42["still"]`)
}

// An emit issued on another node right after the client saw `authenticated`
// is never missed: `authenticated` waits for the room's SUBSCRIBE.
func TestClusterAuthenticatedImpliesSubscribed(t *testing.T) {
	_, ns := newCluster(t, 2)
	for i := range 30 {
		user := "fresh" + strconv.Itoa(i)
		c := ns[1].authed(t, user, "")
		if err := ns[0].n.Service().Emit(context.Background(), user, "hello", i); err != nil {
			t.Fatal(err)
		}
		c.expect(`42["hello",` + strconv.Itoa(i) + `]`)
		c.close()
	}
}

// One PUBLISH per emit, and Redis delivers it only to the nodes holding the
// user: a node without the user receives nothing.
func TestClusterOneDeliveryPerHoldingNode(t *testing.T) {
	rs, ns := newCluster(t, 3)
	c := ns[1].authed(t, "u1", "")
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	publishes := func() int64 {
		info := rdb.Info(ctx, "commandstats").Val()
		for line := range strings.SplitSeq(info, "\n") {
			if strings.HasPrefix(line, "cmdstat_publish:calls=") {
				n, _ := strconv.ParseInt(strings.SplitN(strings.TrimPrefix(line, "cmdstat_publish:calls="), ",", 2)[0], 10, 64)
				return n
			}
		}
		return 0
	}
	n3 := ns[2].n.adapter.(*adapter.Redis)
	before, recvBefore := publishes(), n3.Stats().Received.Load()
	const emits = 20
	for i := range emits {
		if err := ns[0].n.Service().Emit(ctx, "u1", "e", i); err != nil {
			t.Fatal(err)
		}
		c.expect(`42["e",` + strconv.Itoa(i) + `]`)
	}
	// The probes publish too (one per node per interval): allow for them.
	if got := publishes() - before; got < emits || got > emits+20 {
		t.Fatalf("%d PUBLISH for %d emits", got, emits)
	}
	if got := n3.Stats().Received.Load() - recvBefore; got != 0 {
		t.Fatalf("n3, which holds no socket of u1, received %d broadcasts", got)
	}
	if subs := rdb.PubSubNumSub(ctx, "socket.io#/#user:u1#").Val()["socket.io#/#user:u1#"]; subs != 1 {
		t.Fatalf("user:u1 has %d subscribers, want 1 (only n2)", subs)
	}
}

func TestClusterRedisOutage(t *testing.T) {
	rs, ns := newCluster(t, 2)
	remote := ns[1].authed(t, "u1", "")
	local := ns[0].authed(t, "u2", "")
	ctx := context.Background()

	up := rs.Down()
	eventually(t, "n1 not ready while Redis is down", func() bool { return ns[0].n.Ready(ctx) != nil })
	// Local recipients still get their events; the error says the cluster was not reached.
	if err := ns[0].n.Service().Emit(ctx, "u2", "local", nil); err == nil {
		t.Fatal("emit succeeded silently while Redis is down")
	}
	local.expect(`42["local"]`)

	up()
	start := time.Now()
	eventually(t, "n1 and n2 ready again", func() bool {
		return ns[0].n.Ready(ctx) == nil && ns[1].n.Ready(ctx) == nil
	})
	eventually(t, "presence restored", func() bool {
		st, err := ns[0].n.Service().GetStats(ctx)
		return err == nil && st.TotalConnections == 2 && len(st.Nodes) == 2
	})
	t.Logf("recovered %s after Redis came back", time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("recovery took %s, goal 2 s", d)
	}
	// The room subscription is back: cross-node delivery works again.
	eventually(t, "cross-node delivery after the outage", func() bool {
		if err := ns[0].n.Service().Emit(ctx, "u1", "back", nil); err != nil {
			return false
		}
		f, err := remote.nextWithin(300 * time.Millisecond)
		return err == nil && string(f.data) == `42["back"]`
	})
}
