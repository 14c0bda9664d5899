package main

// Paced emits and the accounting of their deliveries.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/messaging-hub/hubnode/adapter"
	"github.com/redis/go-redis/v9"
)

type stepState struct {
	id        int64
	expected  []int32 // sockets of the user when emitted
	received  []atomic.Int32
	recvTotal atomic.Int64
	hist      *Hist
	t0        int64          // step start on the pool clock
	winMax    []atomic.Int64 // worst latency of the emits sent in each 100 ms window
}

const window = 100 * time.Millisecond

func (st *stepState) record(t, lat int64) {
	st.hist.Record(lat)
	if w := (t - st.t0) / int64(window); w >= 0 && w < int64(len(st.winMax)) {
		for m := &st.winMax[w]; ; {
			old := m.Load()
			if lat <= old || m.CompareAndSwap(old, lat) {
				break
			}
		}
	}
}

type emitItem struct {
	user    int
	payload []byte
}

// Emitter sends a batch; receivers is what the transport reports reached
// (PUBLISH's subscriber count in redis mode, accepted items in http mode).
type Emitter interface {
	Send(ctx context.Context, batch []emitItem) (receivers int64, err error)
	Close()
}

type redisEmitter struct{ rdb *redis.Client }

func newRedisEmitter(u string, workers int) (*redisEmitter, error) {
	opt, err := redis.ParseURL(u)
	if err != nil {
		return nil, err
	}
	if _, _, err := loopbackURL("ws://" + opt.Addr); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	opt.PoolSize = workers + 2
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return &redisEmitter{rdb: rdb}, nil
}

var benchEvent = json.RawMessage(`"bench"`)

// Send publishes exactly what @socket.io/redis-emitter publishes for
// io.to("user:<id>").emit("bench", payload), pipelined.
func (e *redisEmitter) Send(ctx context.Context, batch []emitItem) (int64, error) {
	pipe := e.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, 0, len(batch))
	for _, it := range batch {
		room := "user:" + userID(it.user)
		b, err := adapter.EncodeBroadcast("emitter", &adapter.Message{Nsp: "/", Rooms: []string{room},
			Data: []json.RawMessage{benchEvent, it.payload}})
		if err != nil {
			return 0, err
		}
		cmds = append(cmds, pipe.Publish(ctx, "socket.io#/#"+room+"#", b))
	}
	_, err := pipe.Exec(ctx)
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, err
}

func (e *redisEmitter) Close() { _ = e.rdb.Close() }

type httpEmitter struct {
	bases  []string
	key    string
	next   atomic.Uint64
	client *http.Client
}

func newHTTPEmitter(bases []string, key string, workers int) *httpEmitter {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, IdleConnTimeout: 30 * time.Second}
	return &httpEmitter{bases: bases, key: key, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// Send POSTs the batch to /api/v1/emit as one array (≤ 1000 items).
func (e *httpEmitter) Send(ctx context.Context, batch []emitItem) (int64, error) {
	var n int64
	for len(batch) > 0 {
		k := min(len(batch), 1000)
		var body bytes.Buffer
		body.WriteByte('[')
		for i, it := range batch[:k] {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"userId":%q,"event":"bench","data":%s}`, userID(it.user), it.payload)
		}
		body.WriteByte(']')
		base := e.bases[e.next.Add(1)%uint64(len(e.bases))]
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/emit", &body)
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.client.Do(req)
		if err != nil {
			return n, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return n, fmt.Errorf("emit: HTTP %d", resp.StatusCode)
		}
		n += int64(k)
		batch = batch[k:]
	}
	return n, nil
}

func (e *httpEmitter) Close() { e.client.CloseIdleConnections() }

// StepConfig is one paced emit phase.
type StepConfig struct {
	Rate        float64       // emits per second
	Duration    time.Duration // emitting time
	Drain       time.Duration // longest wait for outstanding deliveries
	PayloadSize int           // bytes of filler in each event
	Workers     int           // concurrent batches in flight
	Pids        []int         // servers to sample CPU of
	RedisPid    int
}

// StepResult reports one step: every emit is accounted for.
type StepResult struct {
	Rate          float64  `json:"offeredEmitsPerSecond"`
	Seconds       float64  `json:"seconds"`
	Emitted       int64    `json:"emitted"`
	EmitRate      float64  `json:"achievedEmitsPerSecond"`
	EmitErrors    int64    `json:"emitErrors"`
	Receivers     int64    `json:"transportReceivers"` // sum of PUBLISH replies / accepted items
	Expected      int64    `json:"expectedDeliveries"`
	Received      int64    `json:"received"`
	Lost          int64    `json:"lost"`
	Duplicates    int64    `json:"duplicates"`
	Stray         int64    `json:"stray"`
	Dropped       int64    `json:"droppedSockets"`
	DeliveriesSec float64  `json:"deliveriesPerSecond"`
	LatencyMs     Quantile `json:"latencyMs"`
	ServerCPU     float64  `json:"serverCpuPercent"` // of one core, all server pids summed
	SelfCPU       float64  `json:"hubbenchCpuPercent"`
	RedisCPU      float64  `json:"redisCpuPercent,omitempty"`
	MachineCPU    float64  `json:"machineCpuPercent"` // all processes, of one core (200 = both cores busy)
	OtherCPU      float64  `json:"otherCpuPercent"`   // machine − server − hubbench − redis: other tenants
	FirstError    string   `json:"firstError,omitempty"`
	Spikes        []Spike  `json:"spikes,omitempty"` // 100 ms windows whose worst latency exceeded the p99 bound
	Pass          bool     `json:"pass"`
	Why           []string `json:"why,omitempty"`
	window        []float64
}

var stepIDs atomic.Int64

// Step emits at cfg.Rate to random users for cfg.Duration, then waits for
// the deliveries (at most cfg.Drain) and accounts for every one.
func (p *Pool) Step(ctx context.Context, em Emitter, cfg StepConfig) StepResult {
	maxN := int(cfg.Rate*cfg.Duration.Seconds()) + 1
	st := &stepState{id: stepIDs.Add(1), expected: make([]int32, maxN), received: make([]atomic.Int32, maxN), hist: NewHist(),
		t0: time.Since(p.base).Nanoseconds(), winMax: make([]atomic.Int64, int(cfg.Duration/window)+2)}
	p.step.Store(st)
	defer p.step.Store(nil)
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	filler := strings.Repeat("x", max(cfg.PayloadSize, 0))
	dropped0, stray0 := p.dropped.Load(), p.stray.Load()
	self := []int{osPid}
	srv0, self0, red0, m0 := sumTicks(cfg.Pids), sumTicks(self), cpuTicks(cfg.RedisPid), machineTicks()

	var emitErrs, receivers atomic.Int64
	var firstErr atomic.Value
	work := make(chan []emitItem, 256)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				n, err := em.Send(sctx, b)
				cancel()
				receivers.Add(n)
				if err != nil {
					emitErrs.Add(int64(len(b)))
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	var expTotal int64
	seq := 0
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	rng := rand.New(rand.NewPCG(uint64(st.id), uint64(start.UnixNano())))
	users := len(p.alive)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		el := time.Since(start)
		due := min(int(cfg.Rate*min(el, cfg.Duration).Seconds()), maxN)
		if due > seq {
			batch := make([]emitItem, 0, due-seq)
			for ; seq < due; seq++ {
				u := rng.IntN(users)
				n := p.alive[u].Load()
				st.expected[seq] = n
				expTotal += int64(n)
				t := time.Since(p.base).Nanoseconds()
				batch = append(batch, emitItem{user: u, payload: fmt.Appendf(nil, `{"r":%d,"s":%d,"t":%d,"p":"%s"}`, st.id, seq, t, filler)})
			}
			select {
			case work <- batch:
			case <-ctx.Done():
				break loop
			}
		}
		if el >= cfg.Duration {
			break
		}
	}
	tick.Stop()
	close(work)
	wg.Wait()
	emitSecs := time.Since(start).Seconds()
	// Drain: wait for the outstanding deliveries, or give up after Drain.
	dl := time.Now().Add(cfg.Drain)
	for time.Now().Before(dl) && st.recvTotal.Load() < expTotal-emitErrs.Load() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let duplicates show
	wall := time.Since(start).Seconds()
	r := StepResult{Rate: cfg.Rate, Seconds: emitSecs, Emitted: int64(seq), EmitRate: float64(seq) / emitSecs,
		EmitErrors: emitErrs.Load(), Receivers: receivers.Load(), Expected: expTotal}
	for i := 0; i < seq; i++ {
		got := int64(st.received[i].Load())
		exp := int64(st.expected[i])
		r.Received += got
		if got < exp {
			r.Lost += exp - got
		} else {
			r.Duplicates += got - exp
		}
	}
	r.Stray = p.stray.Load() - stray0
	r.Dropped = p.dropped.Load() - dropped0
	r.DeliveriesSec = float64(r.Received) / emitSecs
	r.LatencyMs = st.hist.Quantiles()
	r.ServerCPU = float64(sumTicks(cfg.Pids)-srv0) / userHZ / wall * 100
	r.SelfCPU = float64(sumTicks(self)-self0) / userHZ / wall * 100
	if cfg.RedisPid > 0 {
		r.RedisCPU = float64(cpuTicks(cfg.RedisPid)-red0) / userHZ / wall * 100
	}
	r.MachineCPU = float64(machineTicks()-m0) / userHZ / wall * 100
	r.OtherCPU = max(r.MachineCPU-r.ServerCPU-r.SelfCPU-r.RedisCPU, 0)
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	for i := range st.winMax {
		if v := st.winMax[i].Load(); v > 0 {
			r.window = append(r.window, float64(v)/1e6)
		}
	}
	r.judge(50)
	return r
}

// Spike is a 100 ms window of send times whose worst latency broke the bound.
type Spike struct {
	AtSeconds float64 `json:"atSeconds"` // from the step's start
	MaxMs     float64 `json:"maxMs"`
}

// judge passes a step with nothing lost, p99 under p99Ms and the offered
// rate actually emitted.
func (r *StepResult) judge(p99Ms float64) {
	r.Why, r.Spikes = nil, nil
	for i, v := range r.window {
		if v > p99Ms {
			r.Spikes = append(r.Spikes, Spike{AtSeconds: float64(i) * window.Seconds(), MaxMs: v})
		}
	}
	if r.Lost > 0 {
		r.Why = append(r.Why, fmt.Sprintf("lost %d", r.Lost))
	}
	if r.Duplicates > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d duplicates", r.Duplicates))
	}
	if r.EmitErrors > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d emit errors", r.EmitErrors))
	}
	if r.Dropped > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d sockets dropped", r.Dropped))
	}
	if r.LatencyMs.P99 > p99Ms {
		r.Why = append(r.Why, fmt.Sprintf("p99 %.1f ms > %.0f ms", r.LatencyMs.P99, p99Ms))
	}
	if r.EmitRate < 0.95*r.Rate {
		r.Why = append(r.Why, fmt.Sprintf("emitter reached only %.0f/s", r.EmitRate))
	}
	r.Pass = len(r.Why) == 0
}

// Ramp steps the rate up by factor from start until a step fails (or
// maxSteps), returning every step and the best passing one.
func (p *Pool) Ramp(ctx context.Context, em Emitter, cfg StepConfig, start, factor float64, maxSteps, confirm int, p99Ms float64, log func(StepResult)) (steps []StepResult, best *StepResult) {
	rate := start
	for i := 0; i < maxSteps && ctx.Err() == nil; i++ {
		cfg.Rate = rate
		var r StepResult
		for try := 0; try <= confirm && ctx.Err() == nil; try++ {
			if try > 0 {
				sleepCtx(ctx, 3*time.Second) // let a backlog clear before the retry
			}
			r = p.Step(ctx, em, cfg)
			r.judge(p99Ms)
			steps = append(steps, r)
			if log != nil {
				log(r)
			}
			if r.Pass || r.Lost > 0 || r.Dropped > 0 {
				break // losses are not noise: no retry
			}
		}
		if !r.Pass {
			break
		}
		best = &steps[len(steps)-1]
		rate *= factor
	}
	if best != nil { // steps may have grown: re-point into the final slice
		for i := range steps {
			if steps[i].Pass {
				best = &steps[i]
			}
		}
	}
	return steps, best
}
