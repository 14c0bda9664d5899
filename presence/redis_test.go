package presence

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messaging-hub/hubnode/adapter/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Test timing: a silent node is gone after testTTL plus one heartbeat.
const (
	testTTL = time.Second
	testHB  = 200 * time.Millisecond
)

func newClient(t testing.TB, s *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newNode creates a presence; started ones are closed when the test ends.
func newNode(t testing.TB, c redis.UniversalClient, id string, start bool, o RedisOptions) *Redis {
	t.Helper()
	o.Client, o.NodeID = c, id
	if o.NodeTTL == 0 {
		o.NodeTTL, o.Heartbeat = testTTL, testHB
	}
	if tt, ok := t.(*testing.T); ok {
		o.Logger = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	}
	r, err := NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	if start {
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
	}
	return r
}

// kill stops the heartbeat without leaving, as SIGKILL would.
func (r *Redis) kill() {
	r.run.Lock()
	defer r.run.Unlock()
	r.halt()
}

func mustAdd(t testing.TB, p Presence, user, conn string) {
	t.Helper()
	if err := p.Add(context.Background(), user, conn); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t testing.TB, p Presence, user, conn string) {
	t.Helper()
	if err := p.Remove(context.Background(), user, conn); err != nil {
		t.Fatal(err)
	}
}

func mustStats(t testing.TB, p Presence) Stats {
	t.Helper()
	s, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkFigures compares every node's Stats and UserConnections with want.
func checkFigures(t *testing.T, want Stats, users map[string]int, nodes ...*Redis) {
	t.Helper()
	for _, n := range nodes {
		if got := mustStats(t, n); !reflect.DeepEqual(got, want) {
			t.Fatalf("Stats from %s:\n got %+v\nwant %+v", n.node, got, want)
		}
		for u, w := range users {
			if got, err := n.UserConnections(context.Background(), u); err != nil || got != w {
				t.Fatalf("UserConnections(%s) from %s = %d, %v; want %d", u, n.node, got, err, w)
			}
		}
	}
}

// eventually polls f every 20ms until it returns nil or d has passed, and
// returns the time it took.
func eventually(t *testing.T, d time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statsEqual(p Presence, want Stats) func() error {
	return func() error {
		got, err := p.Stats(context.Background())
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("stats\n got %+v\nwant %+v", got, want)
		}
		return nil
	}
}

// threeNodes starts nodes a, b, c with users on several nodes.
func threeNodes(t *testing.T, c redis.UniversalClient) (a, b, cc *Redis, want Stats, users map[string]int) {
	a = newNode(t, c, "a", true, RedisOptions{})
	b = newNode(t, c, "b", true, RedisOptions{})
	cc = newNode(t, c, "c", true, RedisOptions{})
	mustAdd(t, a, "u1", "c1")
	mustAdd(t, a, "u1", "c2")
	mustAdd(t, a, "u2", "c3")
	mustAdd(t, b, "u1", "c4")
	mustAdd(t, b, "u3", "c5")
	mustAdd(t, b, "u3", "c1") // the same connection id on another node is another connection
	want = Stats{TotalConnections: 6, AuthenticatedUsers: 3, AverageConnectionsPerUser: 2,
		Nodes: []NodeStats{{"a", 3, 2}, {"b", 3, 2}, {"c", 0, 0}}}
	return a, b, cc, want, map[string]int{"u1": 3, "u2": 1, "u3": 2, "nobody": 0}
}

func TestRedisPresenceFigures(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a, b, cc, want, users := threeNodes(t, c)
	checkFigures(t, want, users, a, b, cc)

	mustAdd(t, cc, "u4", "c9")
	want = Stats{TotalConnections: 7, AuthenticatedUsers: 4, AverageConnectionsPerUser: 1.75,
		Nodes: []NodeStats{{"a", 3, 2}, {"b", 3, 2}, {"c", 1, 1}}}
	users["u4"] = 1
	checkFigures(t, want, users, a, b, cc)

	mustRemove(t, a, "u2", "c3") // u2 leaves entirely
	mustRemove(t, b, "u1", "c4")
	want = Stats{TotalConnections: 5, AuthenticatedUsers: 3, AverageConnectionsPerUser: 1.67,
		Nodes: []NodeStats{{"a", 2, 1}, {"b", 2, 1}, {"c", 1, 1}}}
	users["u1"], users["u2"] = 2, 0
	checkFigures(t, want, users, a, b, cc)
}

func TestRedisPresenceNoOps(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a, b, cc, want, users := threeNodes(t, c)
	mustAdd(t, a, "u1", "c1")     // duplicate
	mustAdd(t, a, "u9", "c1")     // the id is taken: still u1's
	mustRemove(t, a, "u1", "c99") // unknown connection
	mustRemove(t, a, "u2", "c1")  // another user's connection
	mustRemove(t, cc, "u1", "c1") // a connection of another node
	checkFigures(t, want, users, a, b, cc)
	mustRemove(t, a, "u1", "c1")
	mustRemove(t, a, "u1", "c1") // twice
	want.TotalConnections, want.AverageConnectionsPerUser, want.Nodes[0].Connections = 5, 1.67, 2
	users["u1"] = 2
	checkFigures(t, want, users, a, b, cc)
	if got := len(a.local); got != 2 {
		t.Fatalf("local mirror of a has %d connections, want 2", got)
	}
}

// rawFigures reads the keys directly, without any script (Stats reaps).
func rawFigures(c redis.UniversalClient, p string) (nodes []string, users map[string]string, conns map[string]string, err error) {
	ctx := context.Background()
	if nodes, err = c.ZRange(ctx, p+"nodes", 0, -1).Result(); err != nil {
		return
	}
	if users, err = c.HGetAll(ctx, p+"users").Result(); err != nil {
		return
	}
	conns, err = c.HGetAll(ctx, p+"conns").Result()
	return
}

func TestRedisPresenceDeadNodeIsReaped(t *testing.T) {
	s := redistest.Start(t)
	c := newClient(t, s)
	a, b, cc, _, _ := threeNodes(t, c)
	mustAdd(t, cc, "u1", "c7")
	mustAdd(t, cc, "u5", "c8")
	cc.kill()
	killed := time.Now()

	// No Stats call and no manual step: a's and b's heartbeats must reap c.
	// (The bound leaves room for a machine busy with other test packages.)
	eventually(t, testTTL+testHB+4*time.Second, func() error {
		nodes, users, conns, err := rawFigures(c, DefaultPrefix)
		if err != nil {
			return err
		}
		wantUsers := map[string]string{"u1": "3", "u2": "1", "u3": "2"}
		wantConns := map[string]string{"a": "3", "b": "3"}
		if !reflect.DeepEqual(nodes, []string{"a", "b"}) || !reflect.DeepEqual(users, wantUsers) || !reflect.DeepEqual(conns, wantConns) {
			return fmt.Errorf("nodes %v users %v conns %v", nodes, users, conns)
		}
		if n, _ := c.Exists(context.Background(), DefaultPrefix+"node:c:conns", DefaultPrefix+"node:c:users").Result(); n != 0 {
			return fmt.Errorf("%d hashes of c left", n)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("killed node reaped %v after its loop stopped (NodeTTL %v, heartbeat %v)", took.Round(time.Millisecond), testTTL, testHB)
	if took > testTTL+testHB+500*time.Millisecond {
		t.Errorf("reaping took %v, want at most NodeTTL + heartbeat", took)
	}
	want := Stats{TotalConnections: 6, AuthenticatedUsers: 3, AverageConnectionsPerUser: 2,
		Nodes: []NodeStats{{"a", 3, 2}, {"b", 3, 2}}}
	checkFigures(t, want, map[string]int{"u1": 3, "u2": 1, "u3": 2, "u5": 0}, a, b)
}

func TestRedisPresenceStatsReapsWithoutHeartbeats(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a := newNode(t, c, "a", false, RedisOptions{}) // registered, never heartbeating
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.kill()
	mustAdd(t, a, "u1", "c1")
	b := newNode(t, c, "b", false, RedisOptions{})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.kill()
	time.Sleep(testTTL + 50*time.Millisecond)
	if got := mustStats(t, b); got.TotalConnections != 0 || got.AuthenticatedUsers != 0 || len(got.Nodes) != 0 {
		t.Fatalf("stats after every node expired: %+v", got)
	}
	if n, _ := c.DBSize(context.Background()).Result(); n != 0 {
		keys, _ := c.Keys(context.Background(), "*").Result()
		t.Fatalf("keys left after reaping: %v", keys)
	}
}

func TestRedisPresenceWronglyReapedNodeRestoresItself(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a, b, cc, want, users := threeNodes(t, c)
	// Pretend a's heartbeat was late: its expiry passes and b or c reap it.
	if err := c.ZAdd(context.Background(), DefaultPrefix+"nodes", redis.Z{Score: 1, Member: "a"}).Err(); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 2*time.Second, statsEqual(b, want))
	t.Logf("figures true again after %v", took.Round(time.Millisecond))
	checkFigures(t, want, users, a, b, cc)
}

func TestRedisPresenceGracefulClose(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a, b, cc, _, _ := threeNodes(t, c)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(context.Background(), "u1", "c1"); err != ErrClosed {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	want := Stats{TotalConnections: 3, AuthenticatedUsers: 2, AverageConnectionsPerUser: 1.5,
		Nodes: []NodeStats{{"b", 3, 2}, {"c", 0, 0}}}
	checkFigures(t, want, map[string]int{"u1": 1, "u2": 0, "u3": 2}, b, cc)
	keys, err := c.Keys(context.Background(), DefaultPrefix+"node:a:*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("a's keys after Close: %v, %v", keys, err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRedisPresenceRestoresAfterRedisLosesData(t *testing.T) {
	s := redistest.Start(t)
	c := newClient(t, s)
	// Default NodeTTL and Heartbeat: the 2 s restore bound must hold with them.
	def := RedisOptions{NodeTTL: DefaultNodeTTL, Heartbeat: DefaultHeartbeat}
	a := newNode(t, c, "a", true, def)
	b := newNode(t, c, "b", true, def)
	mustAdd(t, a, "u1", "c1")
	mustAdd(t, a, "u2", "c2")
	mustAdd(t, b, "u1", "c3")
	want := Stats{TotalConnections: 3, AuthenticatedUsers: 2, AverageConnectionsPerUser: 1.5,
		Nodes: []NodeStats{{"a", 2, 2}, {"b", 1, 1}}}
	users := map[string]int{"u1": 2, "u2": 1}
	checkFigures(t, want, users, a, b)

	s.Restart() // empty Redis, no traffic afterwards
	took := eventually(t, 2*time.Second, statsEqual(a, want))
	t.Logf("after a restart: figures true again within %v", took.Round(time.Millisecond))
	checkFigures(t, want, users, a, b)

	up := s.Down() // an outage during which connections change
	if err := a.Add(context.Background(), "u3", "c4"); err == nil {
		t.Fatal("Add with Redis down succeeded")
	}
	if err := b.Remove(context.Background(), "u1", "c3"); err == nil {
		t.Fatal("Remove with Redis down succeeded")
	}
	time.Sleep(time.Second)
	up()
	want = Stats{TotalConnections: 3, AuthenticatedUsers: 3, AverageConnectionsPerUser: 1,
		Nodes: []NodeStats{{"a", 3, 3}, {"b", 0, 0}}}
	took = eventually(t, 2*time.Second, statsEqual(b, want))
	t.Logf("after an outage: figures true again within %v", took.Round(time.Millisecond))
	checkFigures(t, want, map[string]int{"u1": 1, "u2": 1, "u3": 1}, a, b)
}

func TestRedisPresenceChurnDoesNotDrift(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	nodes := []*Redis{
		newNode(t, c, "n0", true, RedisOptions{}),
		newNode(t, c, "n1", true, RedisOptions{}),
		newNode(t, c, "n2", true, RedisOptions{}),
	}
	const workers, ops = 4, 2000
	models := make([]map[[2]string]string, workers) // (node, conn) -> user
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // resyncs racing the churn
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
				nodes[i%3].markDirty()
			}
		}
	}()
	for w := range workers {
		models[w] = make(map[[2]string]string)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			m := models[w]
			ctx := context.Background()
			for range ops {
				n := rng.IntN(3)
				conn := fmt.Sprintf("w%d-c%d", w, rng.IntN(60))
				user := fmt.Sprintf("u%d", rng.IntN(30))
				k := [2]string{nodes[n].node, conn}
				if rng.IntN(2) == 0 {
					if err := nodes[n].Add(ctx, user, conn); err != nil {
						t.Error(err)
						return
					}
					if _, ok := m[k]; !ok {
						m[k] = user
					}
					continue
				}
				if u, ok := m[k]; ok && rng.IntN(5) != 0 {
					user = u // mostly the right user, sometimes another one
				}
				if err := nodes[n].Remove(ctx, user, conn); err != nil {
					t.Error(err)
					return
				}
				if m[k] == user {
					delete(m, k)
				}
			}
		})
	}
	wg.Wait()
	close(stop)

	perNode := map[string]map[string]int{"n0": {}, "n1": {}, "n2": {}}
	total, users := 0, map[string]int{}
	for _, m := range models {
		for k, u := range m {
			perNode[k[0]][u]++
			users[u]++
			total++
		}
	}
	want := Stats{TotalConnections: total, AuthenticatedUsers: len(users), AverageConnectionsPerUser: Average(total, len(users))}
	for _, n := range nodes {
		row := NodeStats{NodeID: n.node, AuthenticatedUsers: len(perNode[n.node])}
		for _, k := range perNode[n.node] {
			row.Connections += k
		}
		want.Nodes = append(want.Nodes, row)
		n.mu.Lock()
		if len(n.local) != row.Connections {
			t.Errorf("local mirror of %s has %d connections, model %d", n.node, len(n.local), row.Connections)
		}
		n.mu.Unlock()
	}
	for i := range 30 {
		if u := fmt.Sprintf("u%d", i); users[u] == 0 {
			users[u] = 0
		}
	}
	t.Logf("after %d operations: %d connections of %d users", workers*ops, total, want.AuthenticatedUsers)
	checkFigures(t, want, users, nodes...)
}

// recorder is a go-redis hook that records every command sent.
type recorder struct {
	mu   sync.Mutex
	cmds [][]any
	n    atomic.Int64 // round trips
}

func (h *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		h.cmds = append(h.cmds, cmd.Args())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		for _, c := range cmds {
			h.cmds = append(h.cmds, c.Args())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *recorder) reset() (int64, [][]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cmds := h.cmds
	h.cmds = nil
	return h.n.Swap(0), cmds
}

func TestRedisPresenceOneRoundTripPerChange(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	h := &recorder{}
	c.AddHook(h)
	// A heartbeat this slow never ticks during the test.
	a := newNode(t, c, "a", true, RedisOptions{NodeTTL: 2 * time.Hour, Heartbeat: time.Hour})
	for i, step := range []struct {
		name string
		do   func() error
	}{
		{"Add", func() error { return a.Add(context.Background(), "u1", "c1") }},
		{"Add again", func() error { return a.Add(context.Background(), "u1", "c1") }},
		{"Add second", func() error { return a.Add(context.Background(), "u1", "c2") }},
		{"Remove", func() error { return a.Remove(context.Background(), "u1", "c1") }},
		{"Remove unknown", func() error { return a.Remove(context.Background(), "u1", "c1") }},
	} {
		h.reset()
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		n, cmds := h.reset()
		if n != 1 || len(cmds) != 1 || cmds[0][0] != "evalsha" {
			t.Errorf("step %d %s: %d round trips, commands %v; want one evalsha", i, step.name, n, cmds)
		}
	}
}

// keySlot is Redis Cluster's HASH_SLOT: CRC16 (XMODEM) of the hash tag, mod 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

func TestRedisPresenceKeysShareOneSlot(t *testing.T) {
	// Vectors from the Redis Cluster spec and CLUSTER KEYSLOT on redis 7.0
	// in cluster mode (a standalone server refuses CLUSTER KEYSLOT).
	for key, want := range map[string]int{"123456789": 12739, "hubnode:{presence}:nodes": 15428, "x{presence}y{z}": 15428} {
		if got := keySlot(key); got != want {
			t.Fatalf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	for _, p := range []string{"hubnode:presence:", "hubnode:{}:", "hubnode:{presence:"} {
		if _, err := NewRedis(RedisOptions{Client: &redis.Client{}, NodeID: "a", Prefix: p}); err == nil {
			t.Fatalf("prefix %q without hash tag was accepted", p)
		}
	}

	s := redistest.Start(t)
	c := newClient(t, s)
	h := &recorder{}
	c.AddHook(h)
	a, b, cc, want, _ := threeNodes(t, c) // add, heartbeat, sync
	mustRemove(t, a, "u2", "c3")          // remove
	_ = mustStats(t, b)                   // stats
	cc.kill()                             // reap by a and b
	if err := a.Close(); err != nil {     // leave
		t.Fatal(err)
	}
	want.Nodes = want.Nodes[1:2]
	want.TotalConnections, want.AuthenticatedUsers, want.AverageConnectionsPerUser = 3, 2, 1.5
	eventually(t, 3*time.Second, statsEqual(b, want))
	_, cmds := h.reset()

	slot := keySlot(DefaultPrefix)
	for _, args := range cmds {
		name := fmt.Sprint(args[0])
		if name != "evalsha" && name != "eval" {
			continue
		}
		numKeys, _ := strconv.Atoi(fmt.Sprint(args[2]))
		keys := args[3 : 3+numKeys]
		for _, k := range keys {
			if got := keySlot(fmt.Sprint(k)); got != slot {
				t.Errorf("key %v of a script lies in slot %d, not %d", k, got, slot)
			}
		}
	}
	// Keys scripts build from the prefix (other nodes' hashes) too.
	var all []string
	for _, n := range []*Redis{b, cc} {
		mustAdd(t, n, "u1", "z")
	}
	iter := c.Scan(context.Background(), 0, "*", 100).Iterator()
	for iter.Next(context.Background()) {
		all = append(all, iter.Val())
	}
	sort.Strings(all)
	for _, k := range all {
		if !strings.HasPrefix(k, DefaultPrefix) || keySlot(k) != slot {
			t.Errorf("key %q: slot %d, want %d", k, keySlot(k), slot)
		}
	}
	t.Logf("all keys in slot %d: %v", slot, all)
}

func BenchmarkRedisPresenceAddRemove(b *testing.B) {
	s := redistest.Start(b)
	c := newClient(b, s)
	r := newNode(b, c, "bench", true, RedisOptions{NodeTTL: DefaultNodeTTL, Heartbeat: DefaultHeartbeat})
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			conn := strconv.Itoa(i)
			if err := r.Add(ctx, "u"+strconv.Itoa(i%100), conn); err != nil {
				b.Fatal(err)
			}
			if err := r.Remove(ctx, "u"+strconv.Itoa(i%100), conn); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				conn, user := "p"+strconv.FormatInt(i, 10), "u"+strconv.FormatInt(i%100, 10)
				if err := r.Add(ctx, user, conn); err != nil {
					b.Error(err)
					return
				}
				if err := r.Remove(ctx, user, conn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestRedisPresenceLargeNode covers the chunked paths: a resync of more
// than syncChunk connections over more than drainBudget users, the reaping
// of such a node, and a restart under the same node id.
func TestRedisPresenceLargeNode(t *testing.T) {
	c := newClient(t, redistest.Start(t))
	a := newNode(t, c, "a", true, RedisOptions{})
	b := newNode(t, c, "b", true, RedisOptions{})
	const conns, users = 2600, drainBudget + 300
	for i := range conns {
		mustAdd(t, a, "u"+strconv.Itoa(i%users), "c"+strconv.Itoa(i))
	}
	mustAdd(t, b, "u0", "c0")
	want := Stats{TotalConnections: conns + 1, AuthenticatedUsers: users, AverageConnectionsPerUser: Average(conns+1, users),
		Nodes: []NodeStats{{"a", conns, users}, {"b", 1, 1}}}
	check := map[string]int{"u0": 3, "u1": 2, "u" + strconv.Itoa(users-1): 1}
	checkFigures(t, want, check, a, b)

	a.dirty.Store(true) // a resync drains in two calls and adds in three chunks
	if err := a.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkFigures(t, want, check, a, b)

	a.kill() // b reaps it over several calls in one heartbeat
	want = Stats{TotalConnections: 1, AuthenticatedUsers: 1, AverageConnectionsPerUser: 1, Nodes: []NodeStats{{"b", 1, 1}}}
	eventually(t, testTTL+testHB+time.Second, func() error {
		nodes, users, _, err := rawFigures(c, DefaultPrefix)
		if err != nil || len(nodes) != 1 || len(users) != 1 {
			return fmt.Errorf("%d nodes, %d users, %v", len(nodes), len(users), err)
		}
		return nil
	})
	checkFigures(t, want, map[string]int{"u0": 1, "u1": 0}, b)

	// A new process under a dead node's id replaces what the old one left.
	for i := range conns {
		mustAdd(t, a, "u"+strconv.Itoa(i%users), "c"+strconv.Itoa(i)) // a is stopped, not closed
	}
	a2 := newNode(t, c, "a", true, RedisOptions{})
	mustAdd(t, a2, "u0", "x")
	want = Stats{TotalConnections: 2, AuthenticatedUsers: 1, AverageConnectionsPerUser: 2, Nodes: []NodeStats{{"a", 1, 1}, {"b", 1, 1}}}
	checkFigures(t, want, map[string]int{"u0": 2, "u1": 0}, a2, b)
}
