package main

// hubbench compare: start redis-server, hubnode and the Node.js peer on
// loopback, run the same scenarios against each, print a table with ratios.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ---------------------------------------------------------------- processes

type child struct {
	name string
	cmd  *exec.Cmd
	out  *capBuf
	done chan struct{}
}

// capBuf keeps the first 64 KiB of a process's output.
type capBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuf) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b.Len() < 64<<10 {
		c.b.Write(p[:min(len(p), 64<<10-c.b.Len())])
	}
	return len(p), nil
}

func (c *capBuf) String() string { c.mu.Lock(); defer c.mu.Unlock(); return c.b.String() }

var (
	childMu  sync.Mutex
	children = map[*child]bool{}
)

// start runs a child that dies with us (Pdeathsig) and is tracked for stopAll.
func start(name, dir string, env []string, bin string, args ...string) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	c := &child{name: name, cmd: cmd, out: &capBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	childMu.Lock()
	children[c] = true
	childMu.Unlock()
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s.
func (c *child) stop() {
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	childMu.Lock()
	delete(children, c)
	childMu.Unlock()
}

func stopAll() {
	childMu.Lock()
	list := make([]*child, 0, len(children))
	for c := range children {
		list = append(list, c)
	}
	childMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range list {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop() }()
	}
	wg.Wait()
}

var handedOut = map[int]bool{}

// freePort returns a loopback port that was free a moment ago (never 6379).
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if p != 6379 && !handedOut[p] {
			handedOut[p] = true
			return p, nil
		}
	}
	return 0, errors.New("no free port")
}

// waitHTTP polls url until it answers 200, the child exits or timeout.
func waitHTTP(c *child, url string, timeout time.Duration) error {
	dl := time.Now().Add(timeout)
	cl := &http.Client{Timeout: time.Second}
	for time.Now().Before(dl) {
		if c.exited() {
			return fmt.Errorf("%s exited: %s", c.name, c.out.String())
		}
		if resp, err := cl.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s within %s: %s", c.name, url, timeout, c.out.String())
}

// ---------------------------------------------------------------- systems

const (
	benchSecret = "hubbench-jwt-secret-0123456789ab"
	benchAPIKey = "hubbench-api-key-0123456789abcde"
)

type system struct {
	name  string
	start func(port int, nodeID, redisURL string) (*child, error)
}

func hubnodeSystem(bin string, extraEnv []string) system {
	return system{name: "hubnode", start: func(port int, nodeID, redisURL string) (*child, error) {
		c, err := start("hubnode "+nodeID, "", append([]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "NODE_ID=" + nodeID,
			"JWT_SECRET=" + benchSecret, "API_KEY=" + benchAPIKey, "REDIS_URL=" + redisURL, "LOG_LEVEL=warn",
			"SHUTDOWN_TIMEOUT=3s"}, extraEnv...), bin)
		if err != nil {
			return nil, err
		}
		return c, waitHTTP(c, fmt.Sprintf("http://127.0.0.1:%d/health/ready", port), 15*time.Second)
	}}
}

func peerSystem(dir string) system {
	return system{name: "socket.io peer", start: func(port int, nodeID, redisURL string) (*child, error) {
		c, err := start("peer "+nodeID, dir, []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port),
			"JWT_SECRET=" + benchSecret, "API_KEY=" + benchAPIKey, "REDIS_URL=" + redisURL}, "node", "server.js")
		if err != nil {
			return nil, err
		}
		return c, waitHTTP(c, fmt.Sprintf("http://127.0.0.1:%d/health", port), 15*time.Second)
	}}
}

// preparePeer copies the peer into cache/peer and runs npm ci there once
// (again only when package-lock.json changes).
func preparePeer(src, cache string, log func(string, ...any)) (string, error) {
	dir := filepath.Join(cache, "peer")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	old, _ := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	_, statErr := os.Stat(filepath.Join(dir, "node_modules", "socket.io"))
	for _, f := range []string{"server.js", "package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return "", err
		}
	}
	if bytes.Equal(old, lock) && statErr == nil {
		return dir, nil
	}
	log("npm ci in %s …", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci: %w: %s", err, out)
	}
	return dir, nil
}

func startRedis(bin string) (*child, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	c, err := start("redis", "", nil, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--maxclients", "10000")
	if err != nil {
		return nil, "", err
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d", port)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer rdb.Close()
	for dl := time.Now().Add(10 * time.Second); time.Now().Before(dl); time.Sleep(50 * time.Millisecond) {
		if c.exited() {
			return nil, "", fmt.Errorf("redis-server exited: %s", c.out.String())
		}
		if rdb.Ping(context.Background()).Err() == nil {
			return c, url, nil
		}
	}
	c.stop()
	return nil, "", errors.New("redis-server did not answer PING")
}

// ---------------------------------------------------------------- scenarios

// SystemResult is one system's figures.
type SystemResult struct {
	Name         string        `json:"name"`
	Connect      ConnectResult `json:"connect"`
	RSSBeforeKB  int64         `json:"rssBeforeKB"`
	RSSIdleKB    int64         `json:"rssIdleKB"`
	RSSPerConnKB float64       `json:"rssPerConnKB"`
	IdleCPU      float64       `json:"idleCpuPercent"`
	Ramp         []StepResult  `json:"ramp"`
	Max          *StepResult   `json:"max,omitempty"`
	Fixed        *StepResult   `json:"fixed,omitempty"`
	Large        *ConnectRSS   `json:"large,omitempty"`
	Cluster      *ClusterFig   `json:"cluster,omitempty"`
	Nginx        *NginxFig     `json:"nginx,omitempty"`
	Errors       []string      `json:"errors,omitempty"`
	AliveAtFixed int           `json:"aliveAtFixed,omitempty"`
}

type ConnectRSS struct {
	N            int           `json:"n"`
	Connect      ConnectResult `json:"connect"`
	RSSPerConnKB float64       `json:"rssPerConnKB"`
}

// ClusterFig: emits to users held by node 1 of 3, through Redis.
type ClusterFig struct {
	Nodes            int        `json:"nodes"`
	Users            int        `json:"users"`
	Step             StepResult `json:"step"`
	PublishReceivers float64    `json:"redisDeliveriesPerEmit"` // PUBLISH reply summed / emits
	RedisOutBytes    float64    `json:"redisOutputBytesPerEmit"`
}

type compareOpts struct {
	n, large, clusterN               int
	step, idle                       time.Duration
	startRate, factor, p99           float64
	maxSteps, payload, workers, conc int
	confirm                          int
	skipCluster                      bool
	nginxN, nginxSrcIPs              int
	nginxBin, nginxConf              string
	log                              func(string, ...any)
}

func (o compareOpts) stepCfg(pids []int, redisPid int) StepConfig {
	return StepConfig{Duration: o.step, Drain: 3 * time.Second, PayloadSize: o.payload, Workers: o.workers, Pids: pids, RedisPid: redisPid}
}

// single runs scenarios (d), (a), (b) on one node; (c) runs later at fixedRate.
func single(ctx context.Context, sys system, o compareOpts, redisURL string, redisPid int, fixedRate func(self *SystemResult) float64) (res SystemResult) {
	res.Name = sys.name
	port, _ := freePort()
	node, err := sys.start(port, "b1", redisURL)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return res
	}
	defer node.stop()
	pids := []int{node.pid()}
	sleepCtx(ctx, 2*time.Second)
	res.RSSBeforeKB = rssKB(node.pid())
	target := fmt.Sprintf("ws://127.0.0.1:%d", port)
	pool := NewPool(PoolConfig{Targets: []string{target}, N: o.n, Secret: benchSecret, ConnectConc: o.conc, SrcIPs: autoSrcIPs(o.n)}, time.Now())
	defer pool.Close()
	o.log("%s: connecting %d sockets …", sys.name, o.n)
	res.Connect = pool.Connect(ctx)
	o.log("%s: %d ok, %d failed, %.0f/s", sys.name, res.Connect.OK, res.Connect.Failed, res.Connect.PerSecond)
	t0 := sumTicks(pids)
	sleepCtx(ctx, o.idle)
	res.IdleCPU = float64(sumTicks(pids)-t0) / userHZ / o.idle.Seconds() * 100
	res.RSSIdleKB = rssKB(node.pid())
	if res.Connect.OK > 0 {
		res.RSSPerConnKB = float64(res.RSSIdleKB-res.RSSBeforeKB) / float64(res.Connect.OK)
	}
	o.log("%s: RSS %.1f → %.1f MB: %.2f KB/conn", sys.name, float64(res.RSSBeforeKB)/1024, float64(res.RSSIdleKB)/1024, res.RSSPerConnKB)
	em, err := newRedisEmitter(redisURL, o.workers)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return res
	}
	defer em.Close()
	o.log("%s: ramp from %.0f/s ×%.2f, %s steps", sys.name, o.startRate, o.factor, o.step)
	res.Ramp, res.Max = pool.Ramp(ctx, em, o.stepCfg(pids, redisPid), o.startRate, o.factor, o.maxSteps, o.confirm, o.p99,
		func(r StepResult) { o.log("%s", stepLine(r)) })
	if rate := fixedRate(&res); rate > 0 && ctx.Err() == nil {
		o.log("%s: settling 5 s, then fixed load %.0f/s", sys.name, rate)
		sleepCtx(ctx, 5*time.Second)
		res.AliveAtFixed = pool.Alive()
		cfg := o.stepCfg(pids, redisPid)
		cfg.Rate = rate
		cfg.Duration = 2 * o.step
		r := pool.Step(ctx, em, cfg)
		r.judge(o.p99)
		res.Fixed = &r
		o.log("%s", stepLine(r))
	}
	pool.Close()
	if o.large > 0 && ctx.Err() == nil {
		res.Large = large(ctx, o, node, target)
	}
	return res
}

// large measures RSS per idle connection at o.large sockets on a running node.
func large(ctx context.Context, o compareOpts, node *child, target string) *ConnectRSS {
	sleepCtx(ctx, 3*time.Second)
	before := rssKB(node.pid())
	pool := NewPool(PoolConfig{Targets: []string{target}, N: o.large, Secret: benchSecret, ConnectConc: o.conc, SrcIPs: autoSrcIPs(o.large)}, time.Now())
	defer pool.Close()
	o.log("large: connecting %d sockets …", o.large)
	c := pool.Connect(ctx)
	sleepCtx(ctx, o.idle)
	r := &ConnectRSS{N: o.large, Connect: c}
	if c.OK > 0 {
		r.RSSPerConnKB = float64(rssKB(node.pid())-before) / float64(c.OK)
	}
	o.log("large: %d ok, %.0f/s, %.2f KB/conn", c.OK, c.PerSecond, r.RSSPerConnKB)
	return r
}

// startNodes starts count nodes of sys on one Redis, named prefix1…; stop
// stops those that started, whatever the error.
func startNodes(sys system, prefix string, count int, redisURL string) (ports, pids []int, stop func(), err error) {
	var nodes []*child
	stop = func() {
		for _, n := range nodes {
			n.stop()
		}
	}
	for i := 1; i <= count; i++ {
		port, _ := freePort()
		n, err := sys.start(port, fmt.Sprintf("%s%d", prefix, i), redisURL)
		if err != nil {
			return ports, pids, stop, err
		}
		nodes = append(nodes, n)
		ports = append(ports, port)
		pids = append(pids, n.pid())
	}
	return ports, pids, stop, nil
}

// cluster (e): three nodes on one Redis; sockets only on node 1; emits via
// Redis to those users; PUBLISH's reply counts the subscribers reached.
func cluster(ctx context.Context, sys system, o compareOpts, redisURL string, redisPid int) (*ClusterFig, error) {
	ports, pids, stop, err := startNodes(sys, "c", 3, redisURL)
	defer stop()
	if err != nil {
		return nil, err
	}
	first := fmt.Sprintf("ws://127.0.0.1:%d", ports[0])
	pool := NewPool(PoolConfig{Targets: []string{first}, N: o.clusterN, Secret: benchSecret, ConnectConc: o.conc}, time.Now())
	defer pool.Close()
	if c := pool.Connect(ctx); c.Failed > 0 {
		return nil, fmt.Errorf("cluster connect: %d failed: %v", c.Failed, c.FirstErrors)
	}
	sleepCtx(ctx, 2*time.Second) // let subscriptions settle
	em, err := newRedisEmitter(redisURL, o.workers)
	if err != nil {
		return nil, err
	}
	defer em.Close()
	out0 := redisOutBytes(em.rdb)
	cfg := o.stepCfg(pids, redisPid)
	cfg.Rate, cfg.Duration = 1000, 4*time.Second
	r := pool.Step(ctx, em, cfg)
	r.judge(o.p99)
	out1 := redisOutBytes(em.rdb)
	fig := &ClusterFig{Nodes: 3, Users: o.clusterN, Step: r}
	if r.Emitted > 0 {
		fig.PublishReceivers = float64(r.Receivers) / float64(r.Emitted)
		fig.RedisOutBytes = float64(out1-out0) / float64(r.Emitted)
	}
	o.log("%s cluster: %.2f Redis deliveries per emit, %.0f output bytes per emit; %s", sys.name, fig.PublishReceivers, fig.RedisOutBytes, stepLine(r))
	return fig, nil
}

func redisOutBytes(rdb *redis.Client) int64 {
	s, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_net_output_bytes:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// CompareReport is the -json output of hubbench compare.
type CompareReport struct {
	Machine   map[string]string `json:"machine"`
	Options   map[string]any    `json:"options"`
	Peer      SystemResult      `json:"peer"`
	Hubnode   SystemResult      `json:"hubnode"`
	FixedRate float64           `json:"fixedRate"`
	Started   time.Time         `json:"started"`
	Seconds   float64           `json:"seconds"`
}

func compareCommand(args []string, stdout, stderr io.Writer) (code int) {
	fs := flag.NewFlagSet("hubbench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o compareOpts
	bin := fs.String("hubnode", "bin/hubnode", "hubnode binary")
	peerSrc := fs.String("peer", "/work/shared/peer/socketio-node", "the Node.js peer's folder (copied, never written)")
	cacheDefault, _ := os.UserCacheDir()
	cache := fs.String("cache", filepath.Join(cacheDefault, "hubbench"), "where the peer copy and its node_modules live")
	redisBin := fs.String("redis-server", "redis-server", "redis-server binary")
	fs.IntVar(&o.n, "n", 10000, "connections for (a)–(d)")
	fs.IntVar(&o.large, "large", 0, "also measure RSS/conn at this many connections (e.g. 50000; checks fds and memory first)")
	fs.IntVar(&o.clusterN, "cluster-n", 300, "sockets (users) on node 1 of 3 in (e)")
	fs.BoolVar(&o.skipCluster, "no-cluster", false, "skip (e) and (f)")
	fs.IntVar(&o.nginxN, "nginx-n", 3000, "sockets through nginx to three nodes in (f); 0 skips (f)")
	fs.IntVar(&o.nginxSrcIPs, "nginx-srcips", 30, "loopback source addresses of (f)'s sockets (nginx hashes the client address)")
	fs.StringVar(&o.nginxBin, "nginx", "nginx", "nginx binary for (f)")
	fs.StringVar(&o.nginxConf, "nginx-conf", "charts/nginx/hubnode.conf", "the project's nginx server block for (f)")
	fs.DurationVar(&o.step, "step", 5*time.Second, "emitting time per ramp step")
	fs.DurationVar(&o.idle, "idle", 5*time.Second, "idle time before reading RSS")
	fs.Float64Var(&o.startRate, "start-rate", 1000, "first ramp step, emits/s")
	fs.Float64Var(&o.factor, "factor", 1.5, "ramp factor")
	fs.Float64Var(&o.p99, "p99-ms", 50, "p99 bound of a passing step")
	fs.IntVar(&o.maxSteps, "max-steps", 14, "bound on ramp steps")
	fs.IntVar(&o.confirm, "confirm", 1, "repeat a failing ramp step this many times before believing it (the machine may be shared)")
	fs.IntVar(&o.payload, "payload", 100, "filler bytes per event")
	fs.IntVar(&o.workers, "workers", 4, "emit batches in flight")
	fs.IntVar(&o.conc, "connect-conc", 100, "handshakes in flight")
	nice := fs.Int("nice", -10, "nice value for hubbench and every process it starts (0: leave; <0 needs root): other tenants of a shared machine then perturb less")
	only := fs.String("only", "", "run one system only: hubnode or peer")
	fixedFlag := fs.Float64("fixed-rate", 0, "the rate of (c); default half the peer's highest passing rate (with -only hubnode, set it from an earlier run)")
	hubEnvFlag := fs.String("hubnode-env", "", "extra environment for hubnode, comma-separated KEY=VALUE (e.g. RECOVERY_WINDOW=0: no history, as the peer keeps none)")
	jsonOut := fs.Bool("json", false, "print JSON instead of the table")
	limit := fs.Duration("timeout", 20*time.Minute, "hard bound on the whole comparison")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.log = func(f string, a ...any) { fmt.Fprintf(stderr, time.Now().Format("15:04:05 ")+f+"\n", a...) }
	fail := func(f string, a ...any) int { fmt.Fprintf(stderr, "hubbench compare: "+f+"\n", a...); return 2 }
	var hubEnv []string
	for kv := range strings.SplitSeq(*hubEnvFlag, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fail("bad -hubnode-env entry %q: want KEY=VALUE", kv)
		}
		hubEnv = append(hubEnv, kv)
	}
	if o.n < 1 || o.n > 200000 || o.large < 0 || o.large > 500000 || o.step <= 0 || o.step > time.Minute || o.factor <= 1 {
		return fail("bad -n, -large, -step or -factor")
	}
	nofile := raiseNofile(uint64(max(o.n, o.large))*2 + 8192)
	if need := uint64(max(o.n, o.large)) + 4096; nofile < need {
		return fail("RLIMIT_NOFILE %d is below the %d sockets need (run as root or raise the hard limit)", nofile, need)
	}
	if o.large > 0 {
		if avail := memAvailableKB(); avail < int64(o.large)*200 {
			return fail("-large %d: MemAvailable %d MB is under 200 KB per connection", o.large, avail/1024)
		}
	}
	hub, err := filepath.Abs(*bin)
	if err != nil {
		return fail("%v", err)
	}
	if _, err := os.Stat(hub); err != nil {
		return fail("hubnode binary: %v (build it: go build -o bin/hubnode ./cmd/hubnode)", err)
	}
	ctx, cancel := signalContext(*limit)
	defer cancel()
	defer stopAll()
	defer func() {
		if p := recover(); p != nil {
			stopAll()
			panic(p)
		}
	}()
	if *nice != 0 {
		if err := reniceSelf(*nice); err != nil {
			o.log("renice %d: %v (continuing)", *nice, err)
		}
	}
	peerDir, err := preparePeer(*peerSrc, *cache, o.log)
	if err != nil {
		return fail("%v", err)
	}
	rep := CompareReport{Started: time.Now(), Machine: machine(), Options: map[string]any{"n": o.n, "large": o.large,
		"step": o.step.String(), "startRate": o.startRate, "factor": o.factor, "p99Ms": o.p99, "payload": o.payload,
		"clusterN": o.clusterN, "nofile": nofile, "confirm": o.confirm, "nice": *nice, "nginxN": o.nginxN,
		"nginxSrcIPs": o.nginxSrcIPs, "hubnodeEnv": hubEnv}}
	rsrv, redisURL, err := startRedis(*redisBin)
	if err != nil {
		return fail("%v", err)
	}
	o.log("redis-server pid %d at %s", rsrv.pid(), redisURL)
	// (c) runs both systems at half the peer's maximum: the peer measures
	// it first, hubnode reuses it.
	var peerMax *StepResult
	fixed := func(self *SystemResult) float64 {
		if self.Name == "socket.io peer" {
			peerMax = self.Max
		}
		if *fixedFlag > 0 {
			return *fixedFlag
		}
		if peerMax != nil {
			return peerMax.Rate / 2
		}
		return 0
	}
	if *only != "hubnode" {
		rep.Peer = single(ctx, peerSystem(peerDir), o, redisURL, rsrv.pid(), fixed)
	}
	if peerMax != nil {
		rep.FixedRate = peerMax.Rate / 2
	}
	if *fixedFlag > 0 {
		rep.FixedRate = *fixedFlag
	}
	if *only != "peer" {
		rep.Hubnode = single(ctx, hubnodeSystem(hub, hubEnv), o, redisURL, rsrv.pid(), fixed)
	}
	if !o.skipCluster && ctx.Err() == nil {
		for _, s := range []struct {
			sys system
			res *SystemResult
		}{{peerSystem(peerDir), &rep.Peer}, {hubnodeSystem(hub, hubEnv), &rep.Hubnode}} {
			if (*only == "peer" && s.res == &rep.Hubnode) || (*only == "hubnode" && s.res == &rep.Peer) {
				continue
			}
			fig, err := cluster(ctx, s.sys, o, redisURL, rsrv.pid())
			if err != nil {
				s.res.Errors = append(s.res.Errors, "cluster: "+err.Error())
			}
			s.res.Cluster = fig
			if o.nginxN > 0 && ctx.Err() == nil {
				nf, err := behindNginx(ctx, s.sys, o, redisURL, rsrv.pid())
				if err != nil {
					s.res.Errors = append(s.res.Errors, "nginx: "+err.Error())
				}
				s.res.Nginx = nf
			}
		}
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printCompare(stdout, rep)
	}
	return 0
}

func machine() map[string]string {
	m := map[string]string{}
	b, _ := os.ReadFile("/proc/cpuinfo")
	cpus := 0
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			m["cpu"] = strings.TrimSpace(v)
			cpus++
		}
	}
	m["nproc"] = strconv.Itoa(cpus)
	m["memAvailableMB"] = strconv.FormatInt(memAvailableKB()/1024, 10)
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m["node"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		m["redis"] = strings.TrimSpace(string(out))
	}
	return m
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func printCompare(w io.Writer, r CompareReport) {
	h, p := r.Hubnode, r.Peer
	fmt.Fprintf(w, "\nmachine: %s × %s, MemAvailable %s MB; %s; %s\n", r.Machine["nproc"], r.Machine["cpu"], r.Machine["memAvailableMB"], r.Machine["node"], r.Machine["redis"])
	fmt.Fprintf(w, "options: %v; %.0f s\n\n", r.Options, r.Seconds)
	fmt.Fprintln(w, "| scenario | hubnode | socket.io peer | hubnode / peer |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	row := func(name, hv, pv, rt string) { fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, hv, pv, rt) }
	kb := func(s SystemResult) string {
		return fmt.Sprintf("%.2f KB (%.0f→%.0f MB, %d conns)", s.RSSPerConnKB, float64(s.RSSBeforeKB)/1024, float64(s.RSSIdleKB)/1024, s.Connect.OK)
	}
	row("(a) RSS per idle authenticated connection", kb(h), kb(p), ratio(h.RSSPerConnKB, p.RSSPerConnKB))
	row("(a) idle CPU with all connected", fmt.Sprintf("%.1f%%", h.IdleCPU), fmt.Sprintf("%.1f%%", p.IdleCPU), "")
	if h.Large != nil || p.Large != nil {
		lg := func(s SystemResult) (string, float64) {
			if s.Large == nil {
				return "not measured", 0
			}
			return fmt.Sprintf("%.2f KB (%d conns)", s.Large.RSSPerConnKB, s.Large.Connect.OK), s.Large.RSSPerConnKB
		}
		hs, hv := lg(h)
		ps, pv := lg(p)
		row("(a') RSS per idle connection, large", hs, ps, ratio(hv, pv))
	}
	mx := func(s SystemResult) (string, float64) {
		if s.Max == nil {
			return "none passed", 0
		}
		next := ""
		if n := len(s.Ramp); n > 0 && !s.Ramp[n-1].Pass {
			next = fmt.Sprintf("; next step %.0f/s failed: %s", s.Ramp[n-1].Rate, strings.Join(s.Ramp[n-1].Why, ", "))
		}
		return fmt.Sprintf("%.0f/s (p99 %.1f ms, server CPU %.0f%%, hubbench %.0f%%%s)", s.Max.DeliveriesSec, s.Max.LatencyMs.P99, s.Max.ServerCPU, s.Max.SelfCPU, next), s.Max.DeliveriesSec
	}
	hs, hv := mx(h)
	ps, pv := mx(p)
	if h.Max != nil && len(h.Ramp) > 0 && h.Ramp[len(h.Ramp)-1].Pass {
		hs += " (ramp ended by -max-steps: a lower bound)"
	}
	row("(b) highest sustained deliveries/s, p99 < 50 ms, none lost", hs, ps, ratio(hv, pv))
	fx := func(s SystemResult) string {
		if s.Fixed == nil {
			return "not measured"
		}
		f := s.Fixed
		return fmt.Sprintf("p50 %.2f / p99 %.2f / p99.9 %.2f ms, lost %d, CPU %.0f%%", f.LatencyMs.P50, f.LatencyMs.P99, f.LatencyMs.P999, f.Lost, f.ServerCPU)
	}
	fr := ""
	if h.Fixed != nil && p.Fixed != nil {
		fr = "p99 " + ratio(h.Fixed.LatencyMs.P99, p.Fixed.LatencyMs.P99) + ", CPU " + ratio(h.Fixed.ServerCPU, p.Fixed.ServerCPU)
	}
	row(fmt.Sprintf("(c) latency at %.0f deliveries/s (half the peer's max)", r.FixedRate), fx(h), fx(p), fr)
	cn := func(s SystemResult) string {
		return fmt.Sprintf("%.0f/s (%d ok, %d failed; p99 %.0f ms)", s.Connect.PerSecond, s.Connect.OK, s.Connect.Failed, s.Connect.LatencyMs.P99)
	}
	row("(d) connect+authenticate rate", cn(h), cn(p), ratio(h.Connect.PerSecond, p.Connect.PerSecond))
	cl := func(s SystemResult) (string, float64) {
		if s.Cluster == nil {
			return "not measured", 0
		}
		c := s.Cluster
		return fmt.Sprintf("%.2f (%.0f B out of Redis per emit; lost %d)", c.PublishReceivers, c.RedisOutBytes, c.Step.Lost), c.PublishReceivers
	}
	hs, hv = cl(h)
	ps, pv = cl(p)
	row("(e) Redis deliveries per emit to a user on 1 of 3 nodes", hs, ps, ratio(hv, pv))
	ng := func(s SystemResult) (conn, max string, rate, maxv, kb float64) {
		if s.Nginx == nil {
			return "not measured", "not measured", 0, 0, 0
		}
		g := s.Nginx
		conn = fmt.Sprintf("%.0f/s (%d ok, %d failed; sockets per node %v; %.2f KB/conn over the nodes)", g.Connect.PerSecond, g.Connect.OK, g.Connect.Failed, g.PerNode, g.RSSPerConnKB)
		max, maxv = mx(SystemResult{Max: g.Max, Ramp: g.Ramp})
		return conn, max, g.Connect.PerSecond, maxv, g.RSSPerConnKB
	}
	hc, hm, hr, hmv, hkb := ng(h)
	pc, pm, pr, pmv, pkb := ng(p)
	row("(f) 3 nodes behind nginx: connect+authenticate", hc, pc, ratio(hr, pr)+", RSS "+ratio(hkb, pkb))
	row("(f) 3 nodes behind nginx: highest sustained deliveries/s", hm, pm, ratio(hmv, pmv))
	for _, s := range []SystemResult{h, p} {
		for _, e := range s.Errors {
			fmt.Fprintf(w, "\n%s error: %s", s.Name, e)
		}
	}
	for _, s := range []SystemResult{h, p} {
		if len(s.Ramp) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n\n%s ramp:\n", s.Name)
		for _, st := range s.Ramp {
			fmt.Fprintln(w, stepLine(st))
		}
	}
	fmt.Fprintln(w)
}
