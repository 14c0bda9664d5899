package main

// hubbench soak: N connections churning (each lives a random time, closes in
// one of several ways and is replaced at once) while emits flow, for a
// bounded duration; every interval a sample of the server's RSS, CPU,
// goroutines and connections (/metrics) and of the deliveries; at the end
// the churn stops and the server must return to its baseline. -storm cuts
// every socket at once and reconnects them all.
//
// Accounting is per user by sequence number: one sender goroutine numbers
// each user's emits and records the last one that completed. A socket notes
// the last number issued when it saw `authenticated` (lo) and the last one
// completed when it decides to close (hi); every number in (lo, hi] must
// have reached it exactly once before it closes (it waits up to -drain).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

// SoakSample is one interval's figures.
type SoakSample struct {
	AtSeconds     float64 `json:"atSeconds"`
	ServerRSSMB   float64 `json:"serverRssMB,omitempty"`
	ServerCPU     float64 `json:"serverCpuPercent,omitempty"`
	Goroutines    int64   `json:"goroutines,omitempty"` // go_goroutines, summed over targets (-1: /metrics unreachable)
	ServerConns   int64   `json:"serverConnections"`    // hubnode_connections, summed
	Alive         int64   `json:"authenticatedSockets"` // hubbench's view
	ConnectsSec   float64 `json:"connectsPerSecond"`    // authenticated connections opened in the interval
	EmitsSec      float64 `json:"emitsPerSecond"`       // completed emits in the interval
	DeliveriesSec float64 `json:"deliveriesPerSecond"`  // bench events received in the interval
	Lost          int64   `json:"lost"`                 // cumulative
	Duplicates    int64   `json:"duplicates"`           // cumulative
	Dropped       int64   `json:"droppedByServer"`      // cumulative
	ConnectErrors int64   `json:"connectErrors"`        // cumulative
	RedisOpsSec   float64 `json:"redisCommandsPerSecond,omitempty"`
	P99Ms         float64 `json:"p99Ms"` // delivery latency of the interval
	MaxMs         float64 `json:"maxMs"`
}

// SoakStorm reports the reconnect storm.
type SoakStorm struct {
	AtSeconds         float64  `json:"atSeconds"`
	Sockets           int64    `json:"sockets"`
	ReauthSeconds     float64  `json:"allReauthenticatedSeconds"`
	Reauthenticated   int64    `json:"reauthenticated"`
	Retries           int64    `json:"connectRetries"`
	RedisCommands     int64    `json:"redisCommands,omitempty"` // client-issued (scripts, pub/sub), until all re-authenticated
	RedisCommandsSec  float64  `json:"redisCommandsPerSecond,omitempty"`
	RedisSubscribes   int64    `json:"redisSubscribes,omitempty"`
	RedisUnsubscribes int64    `json:"redisUnsubscribes,omitempty"`
	RedisScriptCalls  int64    `json:"redisScriptCalls,omitempty"`
	FirstErrors       []string `json:"firstErrors,omitempty"`
}

// SoakReport is the outcome of hubbench soak.
type SoakReport struct {
	Targets         []string     `json:"targets"`
	Connections     int          `json:"connections"`
	Users           int          `json:"users"`
	Mode            string       `json:"mode"`
	Rate            float64      `json:"offeredEmitsPerSecond"`
	Seconds         float64      `json:"churnSeconds"`
	Opened          int64        `json:"connectionsOpened"`
	Closes          [4]int64     `json:"closesByMode"` // close frame, tcp cut, 41, engine close
	Emitted         int64        `json:"emitted"`
	EmitErrors      int64        `json:"emitErrors"`
	Owed            int64        `json:"owedDeliveries"` // deliveries checked by sequence number
	Received        int64        `json:"received"`
	Lost            int64        `json:"lost"`
	Duplicates      int64        `json:"duplicates"`
	WrongUser       int64        `json:"wrongUser"`
	Dropped         int64        `json:"droppedByServer"`
	ConnectErrors   int64        `json:"connectErrors"`
	FirstErrors     []string     `json:"firstErrors,omitempty"`
	LatencyMs       Quantile     `json:"latencyMs"`
	Samples         []SoakSample `json:"samples"`
	Storm           *SoakStorm   `json:"storm,omitempty"`
	Baseline        SoakSample   `json:"baseline"`
	Peak            SoakSample   `json:"peak"` // highest RSS and goroutines seen
	Final           SoakSample   `json:"final"`
	SettleSeconds   float64      `json:"settleSeconds"`
	RSSGrowthHalfMB float64      `json:"rssGrowthSecondHalfMB"` // RSS of the last sample − the sample at mid-run
	RSSBack         bool         `json:"rssBack"`
	GoroutinesBack  bool         `json:"goroutinesBack"`
	ConnsBack       bool         `json:"connectionsBack"`
	Pass            bool         `json:"pass"`
	Why             []string     `json:"why,omitempty"`
}

var closeNames = [4]string{"close frame", "tcp cut", "41", "engine close"}

type soakOpts struct {
	targets, bases []string
	n, users       int
	rate           float64
	dur, interval  time.Duration
	lifeMin        time.Duration
	lifeMax        time.Duration
	drain, settle  time.Duration
	stormAt        time.Duration
	stormMove      bool
	payload        int
	pids           []int
	rdb            *redis.Client
	srcIPs         int
	rssTolMB       float64
	grTol          int64
	logf           func(string, ...any)
}

type soak struct {
	o      soakOpts
	pool   *Pool // tokens, open() and the clock
	em     Emitter
	issued []atomic.Int64 // per user: last sequence number issued
	done   []atomic.Int64 // per user: every number up to this one has completed
	failMu sync.Mutex
	failed map[[2]int64]bool // (user, seq) of emits that failed

	hist                                       *Hist
	ihist                                      atomic.Pointer[Hist] // the current interval's latencies
	opened, connErrs, emitted, emitErrs, alive atomic.Int64
	owed, received, lost, dups, wrong, dropped atomic.Int64
	closes                                     [4]atomic.Int64
	errMu                                      sync.Mutex
	firstErrs                                  []string
	stopping                                   chan struct{} // closed: slots close their sockets and stop
	stormFire, stormGate                       chan struct{}
	stormReady, stormReauth, stormRetries      atomic.Int64
	stormErrs                                  []string
	stormStart                                 atomic.Int64 // ns on the pool clock when the gate opened
	stormLast                                  atomic.Int64
}

type soakConn struct {
	*conn
	wmu  sync.Mutex
	mu   sync.Mutex
	lo   int64
	recv []uint8         // recv[i] counts seq lo+1+i
	old  map[int64]uint8 // seqs ≤ lo (optional, checked for duplicates only)
	dead chan struct{}
}

func (sc *soakConn) write(b string) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_ = sc.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return sc.ws.WriteMessage(websocket.TextMessage, []byte(b))
}

func (s *soak) noteErr(list *[]string, err error) {
	s.errMu.Lock()
	if len(*list) < 5 {
		*list = append(*list, err.Error())
	}
	s.errMu.Unlock()
}

func soakCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubbench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls, pidList listFlag
	fs.Var(&urls, "url", "target(s), loopback only: ws://127.0.0.1:3000 (repeat or comma-separate)")
	n := fs.Int("n", 1000, "connections kept churning (at most 100,000)")
	users := fs.Int("users", 0, "distinct users (default n)")
	secret := fs.String("secret", os.Getenv("JWT_SECRET"), "JWT HS256 secret (default $JWT_SECRET)")
	mode := fs.String("mode", "redis", "emit through redis, http or none")
	redisURL := fs.String("redis", "", "Redis URL (loopback): emits in -mode redis, command rates in samples and the storm")
	apiKey := fs.String("api-key", os.Getenv("API_KEY"), "API key for -mode http (default $API_KEY)")
	rate := fs.Float64("rate", 500, "emits per second, each to a random user (at most 100,000)")
	dur := fs.Duration("duration", 3*time.Minute, "churn time (at most 30m)")
	interval := fs.Duration("interval", 10*time.Second, "sampling interval")
	lifeMin := fs.Duration("life-min", time.Second, "shortest socket life")
	lifeMax := fs.Duration("life-max", 30*time.Second, "longest socket life")
	drain := fs.Duration("drain", 3*time.Second, "longest wait, before a socket closes, for the events it is owed")
	settle := fs.Duration("settle", 30*time.Second, "longest wait after the churn for the server to return to its baseline")
	stormMove := fs.Bool("storm-move", false, "in the storm, each socket reconnects to the next -url (a node's clients moving to another)")
	storm := fs.Duration("storm", 0, "at this time into the churn, cut every socket at once and reconnect them all (0: no storm)")
	payload := fs.Int("payload", 50, "filler bytes per event")
	src := fs.Int("srcips", 4, "spread sockets over 127.0.0.2…127.0.0.(k+1) (churn leaves TIME_WAITs); 0: kernel's choice")
	fs.Var(&pidList, "pids", "server PIDs to sample RSS and CPU of (comma-separated)")
	pidfile := fs.String("pidfile", "", "file holding server PIDs")
	rssTol := fs.Float64("rss-tol-mb", 64, "final RSS may exceed the baseline by this much")
	grTol := fs.Int64("goroutine-tol", 10, "final go_goroutines may exceed the baseline by this much")
	jsonOut := fs.Bool("json", false, "print JSON instead of tables")
	limit := fs.Duration("timeout", 0, "hard bound on the whole run (default duration + settle + 2m)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(f string, a ...any) int { fmt.Fprintf(stderr, "hubbench soak: "+f+"\n", a...); return 2 }
	if len(urls) == 0 {
		urls = listFlag{"ws://127.0.0.1:3000"}
	}
	o := soakOpts{n: *n, users: *users, rate: *rate, dur: *dur, interval: *interval, lifeMin: *lifeMin, lifeMax: *lifeMax,
		drain: *drain, settle: *settle, stormAt: *storm, stormMove: *stormMove, payload: *payload, srcIPs: *src, rssTolMB: *rssTol, grTol: *grTol}
	seen := map[string]bool{}
	for _, u := range urls {
		ws, base, err := loopbackURL(u)
		if err != nil {
			return fail("%v", err)
		}
		o.targets = append(o.targets, ws)
		if !seen[base] {
			seen[base] = true
			o.bases = append(o.bases, base)
		}
	}
	switch {
	case o.n < 1 || o.n > 100_000:
		return fail("-n must be 1…100000")
	case o.dur <= 0 || o.dur > 30*time.Minute:
		return fail("-duration must be in (0, 30m]")
	case o.rate < 0 || o.rate > 100_000:
		return fail("-rate must be 0…100000")
	case o.interval < time.Second || o.lifeMin <= 0 || o.lifeMax < o.lifeMin || o.lifeMax > 10*time.Minute:
		return fail("bad -interval, -life-min or -life-max")
	case o.drain <= 0 || o.drain > time.Minute || o.settle < 0 || o.settle > 10*time.Minute:
		return fail("bad -drain or -settle")
	case o.stormAt < 0 || o.stormAt >= o.dur:
		return fail("-storm must fall within -duration")
	case o.srcIPs < 0 || o.srcIPs > 250:
		return fail("bad -srcips")
	case len(*secret) == 0:
		return fail("-secret or JWT_SECRET is required")
	}
	if o.users <= 0 || o.users > o.n {
		o.users = o.n
	}
	pids, err := parsePids(pidList, *pidfile)
	if err != nil {
		return fail("%v", err)
	}
	o.pids = pids
	if *limit <= 0 {
		*limit = o.dur + o.settle + 2*time.Minute
	}
	if *redisURL != "" {
		opt, err := redis.ParseURL(*redisURL)
		if err != nil {
			return fail("-redis: %v", err)
		}
		if _, _, err := loopbackURL("ws://" + opt.Addr); err != nil {
			return fail("-redis: %v", err)
		}
		o.rdb = redis.NewClient(opt)
		defer o.rdb.Close()
	}
	raiseNofile(uint64(2*o.n) + 4096)
	ctx, cancel := signalContext(*limit)
	defer cancel()
	o.logf = func(f string, a ...any) {
		if !*jsonOut {
			fmt.Fprintf(stderr, f+"\n", a...)
		}
	}

	s := &soak{o: o, issued: make([]atomic.Int64, o.users), done: make([]atomic.Int64, o.users), failed: map[[2]int64]bool{},
		hist: NewHist(), stopping: make(chan struct{}), stormFire: make(chan struct{}), stormGate: make(chan struct{})}
	s.ihist.Store(NewHist())
	s.pool = NewPool(PoolConfig{Targets: o.targets, N: o.n, Users: o.users, Secret: *secret, Timeout: 15 * time.Second}, time.Now())
	switch *mode {
	case "redis":
		if *redisURL == "" {
			return fail("-mode redis needs -redis")
		}
		e, err := newRedisEmitter(*redisURL, 1)
		if err != nil {
			return fail("%v", err)
		}
		s.em = e
	case "http":
		s.em = newHTTPEmitter(o.bases, *apiKey, 1)
	case "none":
	default:
		return fail("unknown -mode %q", *mode)
	}
	if s.em != nil {
		defer s.em.Close()
	}
	rep := s.run(ctx)
	rep.Mode = *mode
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printSoak(stdout, rep)
	}
	if !rep.Pass {
		return 1
	}
	return 0
}

// sample reads the server figures: RSS and CPU of the pids, /metrics of every base.
func (s *soak) sample(client *http.Client) SoakSample {
	sm := SoakSample{ServerRSSMB: float64(sumRSS(s.o.pids)) / 1024}
	for _, base := range s.o.bases {
		g, c, err := scrapeMetrics(client, base)
		if err != nil || sm.Goroutines < 0 {
			sm.Goroutines, sm.ServerConns = -1, -1
			continue
		}
		sm.Goroutines += g
		sm.ServerConns += c
	}
	return sm
}

// scrapeMetrics reads go_goroutines and hubnode_connections from GET /metrics.
func scrapeMetrics(client *http.Client, base string) (goroutines, conns int64, err error) {
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("/metrics: HTTP %d %v", resp.StatusCode, err)
	}
	found := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, perr := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if perr != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			goroutines, found = int64(f), found+1
		case "hubnode_connections":
			conns, found = int64(f), found+1
		}
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("/metrics of %s lacks go_goroutines or hubnode_connections", base)
	}
	return goroutines, conns, nil
}

// redisCommands returns the client-issued commands so far (script calls and
// pub/sub, not the commands scripts run inside) and per-command calls.
func redisCommands(ctx context.Context, rdb *redis.Client) (int64, map[string]int64) {
	if rdb == nil {
		return 0, nil
	}
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, nil
	}
	calls := map[string]int64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(v, 10, 64)
	}
	var total int64
	for _, c := range []string{"evalsha", "evalsha_ro", "eval", "subscribe", "unsubscribe", "psubscribe", "publish", "ping", "hello"} {
		total += calls[c]
	}
	return total, calls
}

func (s *soak) run(ctx context.Context) SoakReport {
	o := s.o
	rep := SoakReport{Targets: o.targets, Connections: o.n, Users: o.users, Rate: o.rate}
	hc := &http.Client{Timeout: 3 * time.Second}
	defer hc.CloseIdleConnections()
	rep.Baseline = s.sample(hc)
	o.logf("baseline: RSS %.1f MB, goroutines %d, connections %d; churning %d sockets (%d users, life %v–%v) for %v, %0.f emits/s",
		rep.Baseline.ServerRSSMB, rep.Baseline.Goroutines, rep.Baseline.ServerConns, o.n, o.users, o.lifeMin, o.lifeMax, o.dur, o.rate)

	churnCtx, stopChurn := context.WithCancel(ctx)
	defer stopChurn()
	start := time.Now()
	dialers := make([]*websocket.Dialer, max(o.srcIPs, 1))
	for i := range dialers {
		nd := &net.Dialer{Timeout: 15 * time.Second}
		if o.srcIPs > 0 {
			nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+2))}
		}
		dialers[i] = &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 15 * time.Second, ReadBufferSize: 2048, WriteBufferSize: 512}
	}
	var slots sync.WaitGroup
	for i := range o.n {
		slots.Add(1)
		go func() {
			defer slots.Done()
			s.slot(churnCtx, i, dialers[i%len(dialers)])
		}()
		if i%100 == 99 { // ramp up at ~2k/s rather than all at once
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}
	emitDone := make(chan struct{})
	emitCtx, stopEmit := context.WithCancel(churnCtx)
	defer stopEmit()
	go func() { defer close(emitDone); s.emitLoop(emitCtx, start) }()
	if o.stormAt > 0 {
		go s.stormLoop(churnCtx, start, &rep)
	}

	// Sample every interval until the churn time is over.
	prev := struct {
		t                   time.Time
		opened, emits, recv int64
		ticks, redis        int64
	}{t: time.Now(), ticks: sumTicks(o.pids)}
	prev.redis, _ = redisCommands(ctx, o.rdb)
	tick := time.NewTicker(o.interval)
	end := time.After(o.dur)
	var mid SoakSample
	haveMid := false
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case <-tick.C:
		}
		now := time.Now()
		secs := now.Sub(prev.t).Seconds()
		sm := s.sample(hc)
		sm.AtSeconds = now.Sub(start).Seconds()
		ticks := sumTicks(o.pids)
		sm.ServerCPU = float64(ticks-prev.ticks) / userHZ / secs * 100
		opened, emits, recv := s.opened.Load(), s.emitted.Load(), s.received.Load()
		sm.ConnectsSec = float64(opened-prev.opened) / secs
		sm.EmitsSec = float64(emits-prev.emits) / secs
		sm.DeliveriesSec = float64(recv-prev.recv) / secs
		q := s.ihist.Swap(NewHist()).Quantiles()
		sm.P99Ms, sm.MaxMs = q.P99, q.Max
		sm.Alive, sm.Lost, sm.Duplicates, sm.Dropped, sm.ConnectErrors = s.alive.Load(), s.lost.Load(), s.dups.Load(), s.dropped.Load(), s.connErrs.Load()
		if o.rdb != nil {
			r, _ := redisCommands(ctx, o.rdb)
			sm.RedisOpsSec = float64(r-prev.redis) / secs
			prev.redis = r
		}
		prev.t, prev.opened, prev.emits, prev.recv, prev.ticks = now, opened, emits, recv, ticks
		rep.Samples = append(rep.Samples, sm)
		if !haveMid && sm.AtSeconds >= o.dur.Seconds()/2 {
			mid, haveMid = sm, true
		}
		if sm.ServerRSSMB > rep.Peak.ServerRSSMB {
			rep.Peak.ServerRSSMB = sm.ServerRSSMB
		}
		rep.Peak.Goroutines = max(rep.Peak.Goroutines, sm.Goroutines)
		rep.Peak.ServerConns = max(rep.Peak.ServerConns, sm.ServerConns)
		o.logf("%s", sampleLine(sm))
	}
	tick.Stop()
	rep.Seconds = time.Since(start).Seconds()
	if haveMid {
		rep.RSSGrowthHalfMB = rep.Samples[len(rep.Samples)-1].ServerRSSMB - mid.ServerRSSMB
	}
	// Stop: emits first, then every socket settles its account and closes.
	stopEmit()
	<-emitDone
	close(s.stopping)
	waited := make(chan struct{})
	go func() { slots.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(o.drain + 30*time.Second):
		s.noteErr(&s.firstErrs, fmt.Errorf("sockets still open %v after the churn stopped", o.drain+30*time.Second))
	}
	stopChurn()
	o.logf("churn stopped after %.0fs; waiting up to %v for the server to settle …", rep.Seconds, o.settle)

	// Settle: poll until the server is back, or -settle.
	t0 := time.Now()
	for {
		rep.Final = s.sample(hc)
		rep.Final.AtSeconds = time.Since(start).Seconds()
		rep.RSSBack = len(o.pids) == 0 || rep.Final.ServerRSSMB <= rep.Baseline.ServerRSSMB+o.rssTolMB
		rep.GoroutinesBack = rep.Baseline.Goroutines < 0 || (rep.Final.Goroutines >= 0 && rep.Final.Goroutines <= rep.Baseline.Goroutines+o.grTol)
		rep.ConnsBack = rep.Baseline.ServerConns < 0 || rep.Final.ServerConns == rep.Baseline.ServerConns
		if (rep.RSSBack && rep.GoroutinesBack && rep.ConnsBack) || time.Since(t0) >= o.settle || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	rep.SettleSeconds = time.Since(t0).Seconds()

	rep.Opened, rep.Emitted, rep.EmitErrors = s.opened.Load(), s.emitted.Load(), s.emitErrs.Load()
	rep.Owed, rep.Received, rep.Lost, rep.Duplicates = s.owed.Load(), s.received.Load(), s.lost.Load(), s.dups.Load()
	rep.WrongUser, rep.Dropped, rep.ConnectErrors = s.wrong.Load(), s.dropped.Load(), s.connErrs.Load()
	for i := range rep.Closes {
		rep.Closes[i] = s.closes[i].Load()
	}
	rep.LatencyMs = s.hist.Quantiles()
	rep.FirstErrors = s.firstErrs
	why := func(cond bool, f string, a ...any) {
		if cond {
			rep.Why = append(rep.Why, fmt.Sprintf(f, a...))
		}
	}
	why(rep.Lost > 0, "%d deliveries lost", rep.Lost)
	why(rep.Duplicates > 0, "%d duplicates", rep.Duplicates)
	why(rep.WrongUser > 0, "%d events reached another user's socket", rep.WrongUser)
	why(rep.Dropped > 0, "%d sockets closed by the server", rep.Dropped)
	why(rep.EmitErrors > 0, "%d emits failed", rep.EmitErrors)
	why(rep.ConnectErrors > 0, "%d connection attempts failed outside the storm", rep.ConnectErrors)
	why(!rep.RSSBack, "RSS %.1f MB, baseline %.1f MB + %.0f MB tolerance", rep.Final.ServerRSSMB, rep.Baseline.ServerRSSMB, o.rssTolMB)
	why(!rep.GoroutinesBack, "goroutines %d, baseline %d + %d tolerance", rep.Final.Goroutines, rep.Baseline.Goroutines, o.grTol)
	why(!rep.ConnsBack, "server connections %d after the churn, baseline %d", rep.Final.ServerConns, rep.Baseline.ServerConns)
	why(ctx.Err() != nil, "stopped early: %v", ctx.Err())
	why(rep.Storm != nil && rep.Storm.Reauthenticated < rep.Storm.Sockets, "storm: %d of %d re-authenticated", repStormReauth(rep.Storm), repStormSockets(rep.Storm))
	why(rep.Opened == 0, "no connection opened")
	rep.Pass = len(rep.Why) == 0
	return rep
}

func repStormReauth(s *SoakStorm) int64 {
	if s == nil {
		return 0
	}
	return s.Reauthenticated
}

func repStormSockets(s *SoakStorm) int64 {
	if s == nil {
		return 0
	}
	return s.Sockets
}

// emitLoop is the one sender: paced by a 1 ms ticker, each emit to a random
// user, numbered per user; a batch completes before the next is built, so
// done[u] only ever moves past completed emits.
func (s *soak) emitLoop(ctx context.Context, start time.Time) {
	if s.em == nil || s.o.rate == 0 {
		return
	}
	filler := strings.Repeat("x", max(s.o.payload, 0))
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 7))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	type num struct {
		u int
		s int64
	}
	var batch []emitItem
	var nums []num
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds() * s.o.rate)
		if due-sent > 1000 { // the sender fell behind: do not flood to catch up
			sent = due - 1000
		}
		batch, nums = batch[:0], nums[:0]
		for ; sent < due; sent++ {
			u := rng.IntN(s.o.users)
			seq := s.issued[u].Add(1)
			t := time.Since(s.pool.base).Nanoseconds()
			batch = append(batch, emitItem{user: u, payload: fmt.Appendf(nil, `{"u":%d,"s":%d,"t":%d,"p":"%s"}`, u, seq, t, filler)})
			nums = append(nums, num{u, seq})
		}
		if len(batch) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := s.em.Send(sctx, batch)
		cancel()
		if err != nil {
			s.emitErrs.Add(int64(len(batch)))
			s.noteErr(&s.firstErrs, fmt.Errorf("emit: %w", err))
			s.failMu.Lock()
			for _, x := range nums {
				s.failed[[2]int64{int64(x.u), x.s}] = true
			}
			s.failMu.Unlock()
		} else {
			s.emitted.Add(int64(len(batch)))
		}
		for _, x := range nums {
			s.done[x.u].Store(x.s)
		}
	}
}

// slot keeps one socket alive: open, live, settle the account, close, again.
func (s *soak) slot(ctx context.Context, i int, d *websocket.Dialer) {
	o := s.o
	rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	user := i % o.users
	target := o.targets[i%len(o.targets)]
	stormed := o.stormAt == 0 // this slot has taken part in the storm
	inStorm := false
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-s.stopping:
			return
		case <-ctx.Done():
			return
		default:
		}
		sc, err := s.open(ctx, d, target, user)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if inStorm {
				s.stormRetries.Add(1)
				s.noteErr(&s.stormErrs, err)
			} else {
				s.connErrs.Add(1)
				s.noteErr(&s.firstErrs, err)
			}
			sleepCtx(ctx, backoff/2+time.Duration(rng.Int64N(int64(backoff))))
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if inStorm {
			inStorm = false
			at := time.Since(s.pool.base).Nanoseconds() - s.stormStart.Load()
			for {
				old := s.stormLast.Load()
				if at <= old || s.stormLast.CompareAndSwap(old, at) {
					break
				}
			}
			s.stormReauth.Add(1)
		}
		life := o.lifeMin + time.Duration(rng.Int64N(int64(o.lifeMax-o.lifeMin)+1))
		timer := time.NewTimer(life)
		storm := s.stormFire
		if stormed {
			storm = nil
		}
		stop, died := false, false
		select {
		case <-timer.C:
		case <-s.stopping:
			stop = true
		case <-ctx.Done():
			stop = true
		case <-sc.dead:
			died = true
		case <-storm:
			inStorm = true
		}
		timer.Stop()
		s.settle(sc, died)
		switch {
		case died:
			_ = sc.ws.Close()
			s.alive.Add(-1)
			continue
		case inStorm:
			stormed = true
			s.stormReady.Add(1)
			select {
			case <-s.stormGate:
			case <-ctx.Done():
			}
			s.closeConn(sc, 1) // every socket cut at once
			if o.stormMove {
				target = o.targets[(i+1)%len(o.targets)]
			}
			continue
		}
		s.closeConn(sc, rng.IntN(4))
		if stop {
			return
		}
	}
}

// open dials, authenticates and starts the socket's reader.
func (s *soak) open(ctx context.Context, d *websocket.Dialer, target string, user int) (*soakConn, error) {
	c, err := s.pool.open(ctx, d, target, user)
	if err != nil {
		return nil, err
	}
	sc := &soakConn{conn: c, lo: s.issued[user].Load(), dead: make(chan struct{})}
	s.opened.Add(1)
	s.alive.Add(1)
	go s.readLoop(sc)
	return sc, nil
}

func (s *soak) readLoop(sc *soakConn) {
	defer close(sc.dead)
	for {
		m, err := sc.read()
		if err != nil {
			return
		}
		switch {
		case len(m) == 1 && m[0] == '2':
			if sc.write("3") != nil {
				return
			}
		case len(m) > len(benchPrefix) && string(m[:len(benchPrefix)]) == string(benchPrefix):
			now := time.Since(s.pool.base).Nanoseconds()
			u, ok1 := field(m, `"u":`)
			seq, ok2 := field(m, `"s":`)
			t, ok3 := field(m, `"t":`)
			if !ok1 || !ok2 || !ok3 {
				continue
			}
			s.received.Add(1)
			s.hist.Record(now - t)
			s.ihist.Load().Record(now - t)
			if int(u) != sc.user {
				s.wrong.Add(1)
				continue
			}
			sc.mu.Lock()
			if seq > sc.lo {
				i := int(seq - sc.lo - 1)
				if i >= len(sc.recv) {
					sc.recv = append(sc.recv, make([]uint8, i+1-len(sc.recv))...)
				}
				sc.recv[i]++
			} else {
				if sc.old == nil {
					sc.old = map[int64]uint8{}
				}
				sc.old[seq]++
			}
			sc.mu.Unlock()
		}
	}
}

// settle waits (up to -drain) for every event the socket is owed, then
// books its deliveries: lost, duplicates, dropped.
func (s *soak) settle(sc *soakConn, died bool) {
	hi := s.done[sc.user].Load()
	owed := func() (missing int64, list []int64) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		for seq := sc.lo + 1; seq <= hi; seq++ {
			if i := int(seq - sc.lo - 1); i >= len(sc.recv) || sc.recv[i] == 0 {
				missing++
				list = append(list, seq)
			}
		}
		return missing, list
	}
	deadline := time.Now().Add(s.o.drain)
	missing, list := owed()
	for missing > 0 && time.Now().Before(deadline) && !died {
		select {
		case <-sc.dead:
			died = true
		case <-time.After(10 * time.Millisecond):
		}
		missing, list = owed()
	}
	if missing > 0 {
		s.failMu.Lock()
		for _, seq := range list {
			if s.failed[[2]int64{int64(sc.user), seq}] {
				missing--
			}
		}
		s.failMu.Unlock()
	}
	s.owed.Add(hi - sc.lo)
	s.lost.Add(missing)
	sc.mu.Lock()
	for _, k := range sc.recv {
		if k > 1 {
			s.dups.Add(int64(k - 1))
		}
	}
	for _, k := range sc.old {
		if k > 1 {
			s.dups.Add(int64(k - 1))
		}
	}
	sc.mu.Unlock()
	if died { // hubbench always closes first: the server ended this one
		s.dropped.Add(1)
		s.noteErr(&s.firstErrs, fmt.Errorf("socket of %s closed by the server", userID(sc.user)))
	}
}

// closeConn ends a socket in one of four ways and waits for its reader.
func (s *soak) closeConn(sc *soakConn, mode int) {
	s.closes[mode].Add(1)
	switch mode {
	case 0: // WebSocket close frame
		sc.wmu.Lock()
		_ = sc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		sc.wmu.Unlock()
	case 1: // TCP reset
		if tcp, ok := sc.ws.UnderlyingConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
	case 2: // leave the namespace, then close
		_ = sc.write("41")
		time.Sleep(20 * time.Millisecond)
	case 3: // Engine.IO close: the server ends the connection
		_ = sc.write("1")
		select {
		case <-sc.dead:
		case <-time.After(2 * time.Second):
		}
	}
	_ = sc.ws.Close()
	select {
	case <-sc.dead:
	case <-time.After(5 * time.Second):
	}
	s.alive.Add(-1)
}

// stormLoop fires the storm at -storm: every slot settles its account and
// waits at the gate; the gate opens (all sockets cut at once) and every slot
// reconnects at once. It measures the time until all are authenticated
// again and Redis's commands meanwhile.
func (s *soak) stormLoop(ctx context.Context, start time.Time, rep *SoakReport) {
	o := s.o
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(start.Add(o.stormAt))):
	}
	st := &SoakStorm{AtSeconds: time.Since(start).Seconds()}
	o.logf("storm: settling every socket …")
	close(s.stormFire)
	for deadline := time.Now().Add(o.drain + 10*time.Second); s.stormReady.Load() < int64(o.n) && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(5 * time.Millisecond)
	}
	st.Sockets = s.stormReady.Load()
	before, calls0 := redisCommands(ctx, o.rdb)
	s.stormStart.Store(time.Since(s.pool.base).Nanoseconds())
	t0 := time.Now()
	o.logf("storm: cutting %d sockets at once; all reconnect", st.Sockets)
	close(s.stormGate)
	for deadline := t0.Add(60 * time.Second); s.stormReauth.Load() < st.Sockets && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(2 * time.Millisecond)
	}
	st.Reauthenticated = s.stormReauth.Load()
	st.ReauthSeconds = float64(s.stormLast.Load()) / 1e9
	// Redis: until presence and subscriptions have converged (a moment after the last authentication).
	time.Sleep(500 * time.Millisecond)
	after, calls1 := redisCommands(ctx, o.rdb)
	if o.rdb != nil {
		el := time.Since(t0).Seconds()
		st.RedisCommands = after - before
		st.RedisCommandsSec = float64(st.RedisCommands) / el
		st.RedisSubscribes = calls1["subscribe"] - calls0["subscribe"]
		st.RedisUnsubscribes = calls1["unsubscribe"] - calls0["unsubscribe"]
		st.RedisScriptCalls = calls1["evalsha"] - calls0["evalsha"]
	}
	st.Retries = s.stormRetries.Load()
	s.errMu.Lock()
	st.FirstErrors = slices.Clone(s.stormErrs)
	s.errMu.Unlock()
	rep.Storm = st
	o.logf("storm: %d/%d re-authenticated, the last after %.2fs; %d retries; Redis %d commands (%.0f/s), SUBSCRIBE %d, UNSUBSCRIBE %d, scripts %d",
		st.Reauthenticated, st.Sockets, st.ReauthSeconds, st.Retries, st.RedisCommands, st.RedisCommandsSec, st.RedisSubscribes, st.RedisUnsubscribes, st.RedisScriptCalls)
}

func sampleLine(sm SoakSample) string {
	return fmt.Sprintf("  t %5.0fs  rss %7.1f MB  cpu %4.0f%%  goroutines %6d  srv conns %6d  alive %6d  connects %5.0f/s  emits %6.0f/s  deliv %6.0f/s  p99 %6.1f max %6.1f ms  lost %d dup %d dropped %d connErr %d  redis %6.0f cmd/s",
		sm.AtSeconds, sm.ServerRSSMB, sm.ServerCPU, sm.Goroutines, sm.ServerConns, sm.Alive, sm.ConnectsSec, sm.EmitsSec, sm.DeliveriesSec, sm.P99Ms, sm.MaxMs,
		sm.Lost, sm.Duplicates, sm.Dropped, sm.ConnectErrors, sm.RedisOpsSec)
}

func printSoak(w io.Writer, r SoakReport) {
	fmt.Fprintf(w, "soak: targets %v, %d connections churning, %d users, emit mode %s at %.0f/s, %.0f s\n\n", r.Targets, r.Connections, r.Users, r.Mode, r.Rate, r.Seconds)
	fmt.Fprintln(w, "| t s | RSS MB | CPU % | goroutines | server conns | alive | connects/s | emits/s | deliveries/s | p99 ms | max ms | lost | dup | dropped | connect errors | Redis cmd/s |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	row := func(label string, s SoakSample) {
		fmt.Fprintf(w, "| %s | %.1f | %.0f | %d | %d | %d | %.0f | %.0f | %.0f | %.1f | %.1f | %d | %d | %d | %d | %.0f |\n", label, s.ServerRSSMB, s.ServerCPU,
			s.Goroutines, s.ServerConns, s.Alive, s.ConnectsSec, s.EmitsSec, s.DeliveriesSec, s.P99Ms, s.MaxMs, s.Lost, s.Duplicates, s.Dropped, s.ConnectErrors, s.RedisOpsSec)
	}
	row("baseline", r.Baseline)
	for _, s := range r.Samples {
		row(fmt.Sprintf("%.0f", s.AtSeconds), s)
	}
	row(fmt.Sprintf("final (+%.0fs settle)", r.SettleSeconds), r.Final)
	fmt.Fprintf(w, "\n| connections opened | %d (%.0f/s); closes: %s %d, %s %d, %s %d, %s %d |\n", r.Opened, float64(r.Opened)/r.Seconds,
		closeNames[0], r.Closes[0], closeNames[1], r.Closes[1], closeNames[2], r.Closes[2], closeNames[3], r.Closes[3])
	fmt.Fprintf(w, "| emits | %d (%.0f/s), %d failed |\n", r.Emitted, float64(r.Emitted)/r.Seconds, r.EmitErrors)
	fmt.Fprintf(w, "| deliveries | %d received, %d owed and checked by sequence number: %d lost, %d duplicated, %d to a wrong user; %d sockets dropped by the server |\n",
		r.Received, r.Owed, r.Lost, r.Duplicates, r.WrongUser, r.Dropped)
	fmt.Fprintf(w, "| latency | p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.1f ms |\n", r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999, r.LatencyMs.Max)
	fmt.Fprintf(w, "| RSS | baseline %.1f MB, peak %.1f MB, final %.1f MB (back: %v); growth over the second half of the churn %+.1f MB |\n",
		r.Baseline.ServerRSSMB, r.Peak.ServerRSSMB, r.Final.ServerRSSMB, r.RSSBack, r.RSSGrowthHalfMB)
	fmt.Fprintf(w, "| goroutines | baseline %d, peak %d, final %d (back: %v); server connections final %d (back: %v) |\n",
		r.Baseline.Goroutines, r.Peak.Goroutines, r.Final.Goroutines, r.GoroutinesBack, r.Final.ServerConns, r.ConnsBack)
	if st := r.Storm; st != nil {
		fmt.Fprintf(w, "| storm at %.0fs | %d sockets cut at once, %d re-authenticated, the last after %.2f s; %d connect retries; Redis: %d commands (%.0f/s), SUBSCRIBE %d, UNSUBSCRIBE %d, script calls %d |\n",
			st.AtSeconds, st.Sockets, st.Reauthenticated, st.ReauthSeconds, st.Retries, st.RedisCommands, st.RedisCommandsSec, st.RedisSubscribes, st.RedisUnsubscribes, st.RedisScriptCalls)
		for _, e := range st.FirstErrors {
			fmt.Fprintf(w, "|   storm error | %s |\n", e)
		}
	}
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "|   error | %s |\n", e)
	}
	if r.Pass {
		fmt.Fprintln(w, "\nverdict: PASS")
	} else {
		fmt.Fprintf(w, "\nverdict: FAIL: %s\n", strings.Join(r.Why, "; "))
	}
}
