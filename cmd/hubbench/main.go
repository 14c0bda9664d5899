// Command hubbench is a Socket.IO load generator for hubnode and the Node.js
// reference peer, and a runner that compares the two on this machine.
//
//	hubbench run     -url ws://127.0.0.1:3000 -n 1000 -secret … -mode redis -redis redis://127.0.0.1:6390 -rate 2000 -duration 10s
//	hubbench compare -n 10000          (starts redis-server, hubnode and the peer itself)
//	hubbench soak    -url ws://127.0.0.1:3000 -n 3000 -redis redis://127.0.0.1:6390 -duration 3m -storm 90s
//
// Every run is bounded in time and count, loads only loopback addresses and
// stops every process it started (on return, signal or panic).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var osPid = os.Getpid()

func main() {
	// hubbench's own GC pauses delay its readers and so count as latency of
	// the server under test; a larger heap target makes them rarer (p99 at
	// 8.5k deliveries/s: 5–6 ms instead of 7–8). Set GOGC to override.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var code int
	switch cmd {
	case "run":
		code = runCommand(args, os.Stdout, os.Stderr)
	case "compare":
		code = compareCommand(args, os.Stdout, os.Stderr)
	case "soak":
		code = soakCommand(args, os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "hubbench: unknown command %q (run, compare, soak)\n", cmd)
		code = 2
	}
	os.Exit(code)
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// signalContext is cancelled on SIGINT/SIGTERM and after limit.
func signalContext(limit time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	return ctx, func() { stop(); cancel() }
}

// RunReport is the -json output of hubbench run.
type RunReport struct {
	Targets     []string      `json:"targets"`
	Connections int           `json:"connections"`
	Users       int           `json:"users"`
	Mode        string        `json:"mode"`
	Connect     ConnectResult `json:"connect"`
	RSSBeforeKB int64         `json:"serverRssBeforeKB,omitempty"`
	RSSIdleKB   int64         `json:"serverRssIdleKB,omitempty"`
	RSSPerConnK float64       `json:"serverRssPerConnKB,omitempty"`
	IdleCPU     float64       `json:"serverIdleCpuPercent,omitempty"`
	Steps       []StepResult  `json:"steps"`
	Best        *StepResult   `json:"best,omitempty"`
}

func runCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubbench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls, pidList listFlag
	fs.Var(&urls, "url", "target(s), loopback only: ws://127.0.0.1:3000 (repeat or comma-separate; sockets go round robin)")
	n := fs.Int("n", 1000, "connections (at most 1,000,000)")
	users := fs.Int("users", 0, "distinct users (default n: one socket per user)")
	secret := fs.String("secret", os.Getenv("JWT_SECRET"), "JWT HS256 secret (default $JWT_SECRET)")
	crate := fs.Float64("connect-rate", 0, "new connections per second (0: limited by -connect-conc only)")
	cconc := fs.Int("connect-conc", 100, "handshakes in flight")
	src := fs.Int("srcips", -1, "spread sockets over 127.0.0.2…127.0.0.(k+1); -1: one address per 20k sockets, 0: none")
	mode := fs.String("mode", "redis", "emit through redis (PUBLISH the redis-emitter bytes), http (POST /api/v1/emit) or none")
	redisURL := fs.String("redis", "", "Redis URL for -mode redis (loopback)")
	apiKey := fs.String("api-key", os.Getenv("API_KEY"), "API key for -mode http (default $API_KEY)")
	rate := fs.Float64("rate", 1000, "emits per second (each to a random user)")
	dur := fs.Duration("duration", 10*time.Second, "emitting time per step (at most 10m)")
	payload := fs.Int("payload", 100, "filler bytes per event")
	workers := fs.Int("workers", 4, "emit batches in flight")
	ramp := fs.Float64("ramp", 0, "step the rate up by this factor (e.g. 1.5) until a step fails")
	maxSteps := fs.Int("max-steps", 12, "bound on ramp steps")
	p99 := fs.Float64("p99-ms", 50, "p99 latency bound of a passing step")
	confirm := fs.Int("confirm", 1, "repeat a failing ramp step this many times before believing it")
	fs.Var(&pidList, "pids", "server PIDs to sample RSS and CPU of (comma-separated)")
	pidfile := fs.String("pidfile", "", "file holding server PIDs (whitespace-separated)")
	idle := fs.Duration("idle", 5*time.Second, "idle time after connecting, before measuring RSS")
	jsonOut := fs.Bool("json", false, "print JSON instead of tables")
	limit := fs.Duration("timeout", 15*time.Minute, "hard bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(f string, a ...any) int { fmt.Fprintf(stderr, "hubbench: "+f+"\n", a...); return 2 }
	if len(urls) == 0 {
		urls = listFlag{"ws://127.0.0.1:3000"}
	}
	var targets, bases []string
	for _, u := range urls {
		ws, base, err := loopbackURL(u)
		if err != nil {
			return fail("%v", err)
		}
		targets, bases = append(targets, ws), append(bases, base)
	}
	if *n < 1 || *n > 1_000_000 || *dur <= 0 || *dur > 10*time.Minute || *rate < 0 || *rate > 2_000_000 {
		return fail("bad -n, -duration or -rate")
	}
	if len(*secret) == 0 {
		return fail("-secret or JWT_SECRET is required")
	}
	pids, err := parsePids(pidList, *pidfile)
	if err != nil {
		return fail("%v", err)
	}
	if *src < 0 {
		*src = autoSrcIPs(*n)
	}
	raiseNofile(uint64(*n) + 4096)
	ctx, cancel := signalContext(*limit)
	defer cancel()

	var em Emitter
	switch *mode {
	case "redis":
		if *redisURL == "" {
			return fail("-mode redis needs -redis")
		}
		e, err := newRedisEmitter(*redisURL, *workers)
		if err != nil {
			return fail("%v", err)
		}
		em = e
	case "http":
		em = newHTTPEmitter(bases, *apiKey, *workers)
	case "none":
	default:
		return fail("unknown -mode %q", *mode)
	}
	if em != nil {
		defer em.Close()
	}
	rep := RunReport{Targets: targets, Connections: *n, Users: *users, Mode: *mode}
	if rep.Users <= 0 || rep.Users > *n {
		rep.Users = *n
	}
	logf := func(f string, a ...any) {
		if !*jsonOut {
			fmt.Fprintf(stderr, f+"\n", a...)
		}
	}
	rep.RSSBeforeKB = sumRSS(pids)
	pool := NewPool(PoolConfig{Targets: targets, N: *n, Users: *users, Secret: *secret, ConnectRate: *crate,
		ConnectConc: *cconc, SrcIPs: *src}, time.Now())
	defer pool.Close()
	logf("connecting %d sockets (%d users) to %v …", *n, rep.Users, targets)
	rep.Connect = pool.Connect(ctx)
	logf("connected %d/%d in %.1fs (%.0f/s)", rep.Connect.OK, *n, rep.Connect.Seconds, rep.Connect.PerSecond)
	if len(pids) > 0 {
		t0 := sumTicks(pids)
		sleepCtx(ctx, *idle)
		rep.IdleCPU = float64(sumTicks(pids)-t0) / userHZ / idle.Seconds() * 100
		rep.RSSIdleKB = sumRSS(pids)
		if rep.Connect.OK > 0 {
			rep.RSSPerConnK = float64(rep.RSSIdleKB-rep.RSSBeforeKB) / float64(rep.Connect.OK)
		}
	}
	if em != nil && ctx.Err() == nil {
		cfg := StepConfig{Rate: *rate, Duration: *dur, Drain: 3 * time.Second, PayloadSize: *payload, Workers: *workers, Pids: pids}
		if *ramp > 1 {
			rep.Steps, rep.Best = pool.Ramp(ctx, em, cfg, *rate, *ramp, *maxSteps, *confirm, *p99, func(r StepResult) { logf("%s", stepLine(r)) })
		} else {
			r := pool.Step(ctx, em, cfg)
			r.judge(*p99)
			rep.Steps = append(rep.Steps, r)
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printRun(stdout, rep)
	}
	if rep.Connect.Failed > 0 {
		return 1
	}
	for _, s := range rep.Steps {
		if s.Lost > 0 {
			return 1
		}
	}
	return 0
}

func autoSrcIPs(n int) int {
	if n <= 20000 {
		return 0
	}
	return (n + 19999) / 20000
}

func parsePids(list []string, file string) ([]int, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		list = append(list, strings.Fields(string(b))...)
	}
	var pids []int
	for _, s := range list {
		p, err := strconv.Atoi(s)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q", s)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func stepLine(r StepResult) string {
	verdict := "pass"
	if !r.Pass {
		verdict = "FAIL: " + strings.Join(r.Why, "; ")
	}
	if len(r.Spikes) > 0 {
		var sp []string
		for _, s := range r.Spikes[:min(len(r.Spikes), 12)] {
			sp = append(sp, fmt.Sprintf("%.1fs:%.0fms", s.AtSeconds, s.MaxMs))
		}
		verdict += "  spikes(send time:worst) " + strings.Join(sp, " ")
	}
	return fmt.Sprintf("  rate %8.0f/s  deliv %8.0f/s  p50 %7.2f  p99 %7.2f  p999 %7.2f ms  lost %d dup %d  cpu srv %3.0f%% bench %3.0f%% redis %3.0f%% other %3.0f%%  %s",
		r.Rate, r.DeliveriesSec, r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.P999, r.Lost, r.Duplicates,
		r.ServerCPU, r.SelfCPU, r.RedisCPU, r.OtherCPU, verdict)
}

func printRun(w io.Writer, r RunReport) {
	fmt.Fprintf(w, "targets %v, %d connections, %d users, emit mode %s\n\n", r.Targets, r.Connections, r.Users, r.Mode)
	c := r.Connect
	fmt.Fprintf(w, "| connect+authenticate | %d ok, %d failed in %.2f s = %.0f/s; per socket p50 %.1f ms, p99 %.1f ms |\n",
		c.OK, c.Failed, c.Seconds, c.PerSecond, c.LatencyMs.P50, c.LatencyMs.P99)
	for _, e := range c.FirstErrors {
		fmt.Fprintf(w, "|   error | %s |\n", e)
	}
	if r.RSSIdleKB > 0 {
		fmt.Fprintf(w, "| server RSS | %.1f MB before, %.1f MB idle with %d sockets: %.2f KB/conn; idle CPU %.1f%% |\n",
			float64(r.RSSBeforeKB)/1024, float64(r.RSSIdleKB)/1024, c.OK, r.RSSPerConnK, r.IdleCPU)
	}
	if len(r.Steps) > 0 {
		fmt.Fprintln(w, "\n| offered emits/s | achieved | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | expected | received | lost | dup | dropped | srv CPU % | bench CPU % | verdict |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, s := range r.Steps {
			v := "pass"
			if !s.Pass {
				v = strings.Join(s.Why, "; ")
			}
			fmt.Fprintf(w, "| %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %d | %d | %d | %d | %d | %.0f | %.0f | %s |\n",
				s.Rate, s.EmitRate, s.DeliveriesSec, s.LatencyMs.P50, s.LatencyMs.P99, s.LatencyMs.P999, s.LatencyMs.Max,
				s.Expected, s.Received, s.Lost, s.Duplicates, s.Dropped, s.ServerCPU, s.SelfCPU, v)
		}
	}
	if r.Best != nil {
		fmt.Fprintf(w, "\nhighest passing step: %.0f deliveries/s (p99 %.2f ms)\n", r.Best.DeliveriesSec, r.Best.LatencyMs.P99)
	}
}
