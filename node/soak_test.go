package node

// Soak and leaks (issue 6, item 4): many short-lived connections churning
// while emits flow, then every counter, index, presence figure, goroutine and
// most of the heap must be back to where they were; and a reconnect storm
// (every client of a node at once) must cost Redis a handful of SUBSCRIBEs.
// The long version of the churn lives in cmd/hubbench (`hubbench soak`).

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/messaging-hub/hubnode/presence"
)

const (
	soakWorkers = 24   // client goroutines, each opening one connection after another
	soakUsers   = 12   // users the connections authenticate as
	soakRate    = 1000 // emits per second, each to a random user
)

// soakDuration is the churn time of each churn test (-short: 2 s).
func soakDuration() time.Duration {
	if testing.Short() {
		return 2 * time.Second
	}
	return 8 * time.Second
}

// soakDial opens a WebSocket session without a *testing.T (it runs on worker
// goroutines, where t.Fatal is not allowed) and reads the open packet.
func soakDial(url string) (*wsClient, error) {
	conn, _, err := dialURL(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &wsClient{conn: conn, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go c.readLoop()
	f, err := c.nextWithin(readTimeout)
	if err != nil || f.binary || len(f.data) == 0 || f.data[0] != '0' {
		c.soakClose()
		return nil, fmt.Errorf("open packet: got %s, %v", f, err)
	}
	return c, nil
}

// soakClose closes the connection and waits (bounded) for the reader.
func (c *wsClient) soakClose() {
	_ = c.conn.Close()
	select {
	case <-c.done:
	case <-time.After(readTimeout):
	}
}

// soakCut resets the TCP connection (RST, no close frame), as a vanished
// client or a pulled cable looks to the server, and waits for the reader.
func (c *wsClient) soakCut() {
	if tcp, ok := c.conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	c.soakClose()
}

// soakEvent is the payload of the churn's emits: user index and per-user sequence.
type soakEvent struct {
	U int   `json:"u"`
	S int64 `json:"s"`
}

var soakPrefix = []byte(`42["soak",`)

// parseSoak returns the event of a soak frame; ok is false for other frames.
func parseSoak(f wsFrame) (ev soakEvent, ok bool, err error) {
	if f.binary || len(f.data) < len(soakPrefix)+1 || string(f.data[:len(soakPrefix)]) != string(soakPrefix) {
		return ev, false, nil
	}
	if err := json.Unmarshal(f.data[len(soakPrefix):len(f.data)-1], &ev); err != nil {
		return ev, true, fmt.Errorf("bad soak frame %s: %v", f, err)
	}
	return ev, true, nil
}

// soakAuth joins the namespace and authenticates; soak events that arrive
// before `authenticated` (the socket is in the room a moment before) are
// passed to seen.
func soakAuth(c *wsClient, token, user string, seen func(soakEvent)) error {
	c.send("40")
	f, err := c.nextWithin(readTimeout)
	if err != nil || !strings.HasPrefix(string(f.data), "40{") {
		return fmt.Errorf("CONNECT reply: got %s, %v", f, err)
	}
	c.send(`42["authenticate",{"token":"` + token + `"}]`)
	want := `42["authenticated",{"userId":"` + user + `",`
	sent := time.Now()
	for {
		f, err := c.nextWithin(2 * readTimeout)
		if err != nil {
			return fmt.Errorf("waiting for authenticated (%v since authenticate): %v", time.Since(sent).Round(time.Millisecond), err)
		}
		if ev, ok, err := parseSoak(f); ok {
			if err != nil {
				return err
			}
			if seen != nil {
				seen(ev)
			}
			continue
		}
		if !strings.HasPrefix(string(f.data), want) {
			return fmt.Errorf("got %s after %v, want %s…", f, time.Since(sent).Round(time.Millisecond), want)
		}
		return nil
	}
}

// soakErrors reports the first few errors of many goroutines.
type soakErrors struct {
	t *testing.T
	n atomic.Int64
}

func (e *soakErrors) errorf(format string, a ...any) {
	if e.n.Add(1) <= 20 {
		e.t.Errorf(format, a...)
	}
}

// Close modes of a churning connection.
const (
	closeFrame  = iota // WebSocket close frame, then the TCP close
	closeCut           // TCP reset, no goodbye
	closeLeave         // `41` (leave the namespace), a moment on the bare session, then close
	closeEngine        // Engine.IO close packet `1`; the server ends the connection
	closeNoAuth        // joins the namespace, never authenticates, closes
	closeModes
)

var closeModeNames = [closeModes]string{"close frame", "tcp cut", "41", "engine close", "unauthenticated"}

// soakChurn runs the churn against nodes for d: soakWorkers goroutines open,
// authenticate, receive and close connections; one goroutine emits through
// emitter at soakRate. Every emit issued after a socket saw `authenticated`
// and completed before it started closing must reach that socket exactly
// once; nothing of another user may reach it.
func soakChurn(t *testing.T, nodes []*testNode, emitter *Service, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	errs := &soakErrors{t: t}
	var issued, done [soakUsers]atomic.Int64 // per user: last seq started, last seq whose Emit returned
	tokens := make([]string, soakUsers)
	for u := range tokens {
		tokens[u] = mustToken(t, "s"+strconv.Itoa(u), "", time.Hour)
	}
	var (
		wg                               sync.WaitGroup
		emits, emitErrs                  atomic.Int64
		authed, received, checked, dials atomic.Int64
		modes                            [closeModes]atomic.Int64
	)
	start := time.Now()

	wg.Add(1)
	go func() { // the emitter: paced, to random users
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		sent := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int(time.Since(start).Seconds() * soakRate); sent < due && ctx.Err() == nil; sent++ {
				u := rand.IntN(soakUsers)
				s := issued[u].Add(1)
				ectx, ecancel := context.WithTimeout(context.Background(), readTimeout)
				err := emitter.Emit(ectx, "s"+strconv.Itoa(u), "soak", soakEvent{U: u, S: s})
				ecancel()
				if err != nil {
					emitErrs.Add(1)
					errs.errorf("emit to s%d: %v", u, err)
					continue
				}
				done[u].Store(s)
				emits.Add(1)
			}
		}
	}()

	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for ctx.Err() == nil {
				tn := nodes[rng.IntN(len(nodes))]
				u := rng.IntN(soakUsers)
				user := "s" + strconv.Itoa(u)
				mode := rng.IntN(closeModes)
				c, err := soakDial(tn.wsURL("EIO=4&transport=websocket"))
				if err != nil {
					errs.errorf("worker %d: %v", w, err)
					return
				}
				dials.Add(1)
				modes[mode].Add(1)
				if mode == closeNoAuth {
					c.send("40")
					if f, err := c.nextWithin(readTimeout); err != nil || !strings.HasPrefix(string(f.data), "40{") {
						errs.errorf("worker %d: CONNECT reply %s, %v", w, f, err)
					}
					c.soakClose()
					continue
				}
				got := make(map[int64]int)
				var bad error
				seen := func(ev soakEvent) {
					if ev.U != u && bad == nil {
						bad = fmt.Errorf("socket of %s received an event of s%d", user, ev.U)
					}
					got[ev.S]++
				}
				if err := soakAuth(c, tokens[u], user, seen); err != nil {
					errs.errorf("worker %d on %s: %v", w, tn.n.opts.NodeID, err)
					c.soakCut()
					continue
				}
				authed.Add(1)
				lo := issued[u].Load() // every later seq was issued after `authenticated`
				read := func(until time.Time) error {
					f, err := c.nextWithin(time.Until(until))
					if err != nil {
						return err
					}
					ev, ok, perr := parseSoak(f)
					switch {
					case perr != nil:
						return perr
					case ok:
						seen(ev)
						received.Add(1)
					default:
						return fmt.Errorf("unexpected frame %s", f)
					}
					return nil
				}
				life := time.Now().Add(time.Duration(10+rng.IntN(140)) * time.Millisecond)
				var rerr error
				for time.Now().Before(life) && rerr == nil {
					if err := read(life); err != nil && err != errTimeout {
						rerr = err
					}
				}
				hi := done[u].Load() // every seq up to hi has been emitted
				complete := func() bool {
					for s := lo + 1; s <= hi; s++ {
						if got[s] == 0 {
							return false
						}
					}
					return true
				}
				for deadline := time.Now().Add(readTimeout); rerr == nil && !complete() && time.Now().Before(deadline); {
					if err := read(deadline); err != nil && err != errTimeout {
						rerr = err
					}
				}
				if rerr != nil {
					errs.errorf("worker %d, %s on %s: connection failed while authenticated: %v", w, user, tn.n.opts.NodeID, rerr)
				}
				var missing, dups []int64
				for s := lo + 1; s <= hi; s++ {
					if got[s] == 0 {
						missing = append(missing, s)
					}
				}
				for s, k := range got {
					if k > 1 {
						dups = append(dups, s)
					}
				}
				if len(missing) > 0 || len(dups) > 0 || bad != nil {
					slices.Sort(dups)
					errs.errorf("%s on %s, seqs (%d, %d]: missed %d %v, duplicated %v, %v",
						user, tn.n.opts.NodeID, lo, hi, len(missing), missing[:min(len(missing), 10)], dups, bad)
				}
				checked.Add(hi - lo)
				switch mode {
				case closeFrame:
					_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					c.soakClose()
				case closeCut:
					c.soakCut()
				case closeLeave:
					c.send("41")
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
					c.soakClose()
				case closeEngine:
					c.send("1")
					select { // the server ends the connection
					case <-c.done:
					case <-time.After(readTimeout):
						errs.errorf("%s: the server did not close the connection after a close packet", user)
					}
					c.soakClose()
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	var per []string
	for m := range modes {
		per = append(per, fmt.Sprintf("%s %d", closeModeNames[m], modes[m].Load()))
	}
	t.Logf("churn %.1fs on %d node(s): %d connections (%.0f/s), %d authenticated (%.0f/s); %d emits (%.0f/s), %d deliveries received, %d owed deliveries checked; closes: %s",
		secs, len(nodes), dials.Load(), float64(dials.Load())/secs, authed.Load(), float64(authed.Load())/secs,
		emits.Load(), float64(emits.Load())/secs, received.Load(), checked.Load(), strings.Join(per, ", "))
	if authed.Load() < 100 || emits.Load() < 1000 || checked.Load() == 0 {
		t.Errorf("the churn did too little to prove anything: %d authenticated, %d emits, %d checked", authed.Load(), emits.Load(), checked.Load())
	}
}

// soakIdle checks that a node holds nothing: no session, socket, user or
// room, and that its presence counts nothing of its own (nor, with
// everywhere, anything at all).
func soakIdle(tn *testNode, everywhere bool) error {
	n := tn.n
	n.mu.Lock()
	sessions, bySID, authed := len(n.sessions), len(n.bySID), len(n.authed)
	n.mu.Unlock()
	rooms := 0
	for i := range n.rooms.shards {
		sh := &n.rooms.shards[i]
		sh.mu.RLock()
		rooms += len(sh.rooms)
		sh.mu.RUnlock()
	}
	st, err := n.Service().GetStats(context.Background())
	if err != nil {
		return err
	}
	own := presence.NodeStats{NodeID: n.opts.NodeID}
	for _, ns := range st.Nodes {
		if ns.NodeID == n.opts.NodeID {
			own = ns
		}
	}
	if n.open.Load() != 0 || n.users.Load() != 0 || sessions != 0 || bySID != 0 || authed != 0 || rooms != 0 ||
		everywhere && (st.TotalConnections != 0 || st.AuthenticatedUsers != 0) || own.Connections != 0 || own.AuthenticatedUsers != 0 {
		return fmt.Errorf("%s not idle: open %d, users %d, sessions %d, bySID %d, authed %d, rooms %d; stats %+v",
			n.opts.NodeID, n.open.Load(), n.users.Load(), sessions, bySID, authed, rooms, st)
	}
	return nil
}

// soakEventually polls cond (nil when it holds) for up to d.
func soakEventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// soakBaseline returns the goroutine count and the live heap after a GC.
func soakBaseline() (int, uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// soakBackToBaseline requires the goroutines back to the baseline within
// 2 s and the live heap within 8 MB of it.
func soakBackToBaseline(t *testing.T, goroutines int, heap uint64) {
	t.Helper()
	var now int
	deadline := time.Now().Add(2 * time.Second)
	for now = runtime.NumGoroutine(); now > goroutines && time.Now().Before(deadline); now = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if now > goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the churn, baseline %d\n%s", now, goroutines, buf[:runtime.Stack(buf, true)])
	}
	runtime.GC() // the first cycle may only finish sweeping what the churn left
	_, h := soakBaseline()
	t.Logf("goroutines %d (baseline %d); live heap %.1f MB (baseline %.1f MB)", now, goroutines, float64(h)/(1<<20), float64(heap)/(1<<20))
	if h > heap+8<<20 {
		t.Errorf("live heap %.1f MB after the churn, baseline %.1f MB: more than 8 MB kept", float64(h)/(1<<20), float64(heap)/(1<<20))
	}
}

func TestSoakChurnOneNode(t *testing.T) {
	tn := newTestNode(t, nil)
	goroutines, heap := soakBaseline()
	soakChurn(t, []*testNode{tn}, tn.n.Service(), soakDuration())
	// bySID keeps a closed session findable for closedLinger.
	soakEventually(t, closedLinger+readTimeout, "the node back to idle", func() error { return soakIdle(tn, true) })
	soakBackToBaseline(t, goroutines, heap)
}

// redisPresenceEmpty checks the presence hashes: no user counted, no node
// row with connections.
func redisPresenceEmpty(rdb *redis.Client) error {
	ctx := context.Background()
	users, err := rdb.HLen(ctx, presence.DefaultPrefix+"users").Result()
	if err != nil {
		return err
	}
	conns, err := rdb.HGetAll(ctx, presence.DefaultPrefix+"conns").Result()
	if err != nil {
		return err
	}
	for id, c := range conns {
		if c != "0" {
			return fmt.Errorf("%d users in the users hash; node %s has %s connections", users, id, c)
		}
	}
	if users != 0 {
		return fmt.Errorf("%d users in the users hash", users)
	}
	return nil
}

// userChannels lists the user-room channels Redis has subscribers for.
func userChannels(rdb *redis.Client) ([]string, error) {
	return rdb.PubSubChannels(context.Background(), "socket.io#/#user:*").Result()
}

func TestSoakChurnCluster(t *testing.T) {
	rs, ns := newCluster(t, 2)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	goroutines, heap := soakBaseline()
	soakChurn(t, ns, ns[0].n.Service(), soakDuration())
	for _, tn := range ns {
		soakEventually(t, closedLinger+readTimeout, "the nodes back to idle", func() error { return soakIdle(tn, true) })
	}
	soakEventually(t, readTimeout, "Redis presence empty", func() error { return redisPresenceEmpty(rdb) })
	// Every user room is unsubscribed once its last socket left (after the
	// adapter's unsubscribe delay): no subscription leaks.
	soakEventually(t, readTimeout, "no user channel subscribed", func() error {
		if chans, err := userChannels(rdb); err != nil || len(chans) > 0 {
			return fmt.Errorf("subscribed: %v %v", chans, err)
		}
		return nil
	})
	soakBackToBaseline(t, goroutines, heap)
}

// commandStats returns the calls of each Redis command (INFO commandstats).
func commandStats(t *testing.T, rdb *redis.Client) map[string]int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64)
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(calls, 10, 64)
	}
	return out
}

// TestSoakReconnectStorm cuts every client of node A at once and reconnects
// them all to node B immediately, as a load balancer does when A dies.
func TestSoakReconnectStorm(t *testing.T) {
	const clients = 500
	rs, ns := newCluster(t, 2)
	a, b := ns[0], ns[1]
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	tokens := make([]string, clients)
	for i := range tokens {
		tokens[i] = mustToken(t, "storm"+strconv.Itoa(i), "", time.Hour)
	}
	conns := make([]*wsClient, clients)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.soakClose()
			}
		}
	})
	open := func(tn *testNode, i int) error {
		c, err := soakDial(tn.wsURL("EIO=4&transport=websocket"))
		if err != nil {
			return err
		}
		conns[i] = c
		return soakAuth(c, tokens[i], "storm"+strconv.Itoa(i), nil)
	}
	// All on A, 50 handshakes in flight.
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := open(a, i); err != nil && failed.Add(1) <= 5 {
				t.Errorf("client %d on A: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	var polls atomic.Int64 // our own GetStats calls: one stats script each
	stats := func() (presence.Stats, error) { polls.Add(1); return a.n.Service().GetStats(ctx) }
	want := func(onA, onB int) func() error {
		return func() error {
			st, err := stats()
			if err != nil {
				return err
			}
			got := fmt.Sprintf("%d %d %v", st.TotalConnections, st.AuthenticatedUsers, st.Nodes)
			if w := fmt.Sprintf("%d %d [{n1 %d %d} {n2 %d %d}]", clients, clients, onA, onA, onB, onB); got != w {
				return fmt.Errorf("stats %s, want %s", got, w)
			}
			return nil
		}
	}
	soakEventually(t, readTimeout, "500 on A", want(clients, 0))

	before, polls0 := commandStats(t, rdb), polls.Load()
	start := time.Now()
	for _, c := range conns { // every connection of A cut at once…
		if tcp, ok := c.conn.UnderlyingConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		_ = c.conn.Close()
	}
	for _, c := range conns {
		<-c.done
	}
	var lastAuth atomic.Int64
	for i := range clients { // …and every client back on B at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := open(b, i); err != nil {
				if failed.Add(1) <= 5 {
					t.Errorf("client %d reconnecting to B: %v", i, err)
				}
				return
			}
			for d := int64(time.Since(start)); ; {
				old := lastAuth.Load()
				if d <= old || lastAuth.CompareAndSwap(old, d) {
					break
				}
			}
		}()
	}
	wg.Wait()
	storm := time.Duration(lastAuth.Load())
	if failed.Load() > 0 {
		t.FailNow()
	}
	if storm > 10*time.Second {
		t.Errorf("the %d clients took %v to authenticate again on B, want ≤ 10s", clients, storm)
	}
	soakEventually(t, 2*readTimeout, "presence: 0 on A, 500 on B", want(0, clients))
	// A unsubscribes its rooms after the unsubscribe delay; then every user
	// channel has exactly one subscriber, B.
	soakEventually(t, readTimeout, "A's rooms unsubscribed", func() error {
		if err := soakIdle(a, false); err != nil {
			return err
		}
		chans, err := userChannels(rdb)
		if err != nil || len(chans) != clients {
			return fmt.Errorf("%d user channels subscribed, want %d (%v)", len(chans), clients, err)
		}
		subs, err := rdb.PubSubNumSub(ctx, chans...).Result()
		if err != nil {
			return err
		}
		for ch, k := range subs {
			if k != 1 {
				return fmt.Errorf("%s has %d subscribers, want 1", ch, k)
			}
		}
		return nil
	})
	after, ours := commandStats(t, rdb), polls.Load()-polls0
	delta := func(cmd string) int64 { return after[cmd] - before[cmd] }
	// INFO commandstats also counts the commands run inside scripts; count
	// what the nodes send: script calls (minus our stats polls) and pub/sub.
	var total int64
	var sent []string
	for _, cmd := range []string{"evalsha", "eval", "subscribe", "unsubscribe", "publish", "ping", "hello", "client|setinfo", "script|load"} {
		d := delta(cmd)
		if cmd == "evalsha" {
			d -= ours
		}
		total += d
		if d > 0 {
			sent = append(sent, fmt.Sprintf("%s %d", cmd, d))
		}
	}
	t.Logf("storm: %d clients cut on A, all authenticated on B within %v (%.0f/s); commands the nodes sent Redis until presence converged and A unsubscribed: %d (%s)",
		clients, storm.Round(time.Millisecond), clients/storm.Seconds(), total, strings.Join(sent, ", "))
	if s := delta("subscribe"); s > clients/10 {
		t.Errorf("%d SUBSCRIBE commands for %d reconnecting users: not batched", s, clients)
	}
	if u := delta("unsubscribe"); u > clients/10 {
		t.Errorf("%d UNSUBSCRIBE commands for %d departed users: not batched", u, clients)
	}
	// Presence is one script call per connect and per disconnect; the rest
	// (heartbeats, probes) is a few per node per 200 ms.
	if total > 2*clients+200 {
		t.Errorf("%d Redis commands for a storm of %d clients", total, clients)
	}
	// The subscriptions work: an emit from A reaches every client on B.
	for i := range clients {
		if err := a.n.Service().Emit(ctx, "storm"+strconv.Itoa(i), "after", i); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns {
		f, err := c.nextWithin(readTimeout)
		if w := `42["after",` + strconv.Itoa(i) + `]`; err != nil || string(f.data) != w {
			t.Fatalf("client %d: got %s, %v; want %s", i, f, err, w)
		}
	}
	for _, c := range conns {
		c.soakClose()
	}
	soakEventually(t, closedLinger+readTimeout, "B back to idle", func() error { return soakIdle(b, true) })
	soakEventually(t, readTimeout, "Redis presence empty", func() error { return redisPresenceEmpty(rdb) })
}
