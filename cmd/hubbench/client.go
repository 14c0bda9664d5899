package main

// The load client: Socket.IO v5 over Engine.IO v4 on a raw WebSocket, so it
// drives hubnode and the Node.js peer alike. One goroutine per socket reads
// and answers pings; nothing else writes after authentication.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// PoolConfig says which sockets to open and how.
type PoolConfig struct {
	Targets     []string // ws://host:port, round robin
	N           int      // sockets
	Users       int      // distinct users; socket i belongs to user i % Users
	Secret      string   // HS256 key of the tokens
	ConnectRate float64  // new sockets per second; 0 = as fast as ConnectConc allows
	ConnectConc int      // handshakes in flight
	SrcIPs      int      // bind sockets to 127.0.0.2 … 127.0.0.(SrcIPs+1); 0 = kernel's choice
	Timeout     time.Duration
}

// Pool is a set of authenticated sockets and the delivery accounting.
type Pool struct {
	cfg     PoolConfig
	base    time.Time // one monotonic clock for send and receive times
	tokens  []string
	alive   []atomic.Int32 // authenticated, open sockets per user
	mu      sync.Mutex
	conns   []*conn
	wg      sync.WaitGroup
	step    atomic.Pointer[stepState]
	dropped atomic.Int64 // sockets that closed after authenticating, before Close
	closing atomic.Bool
	stray   atomic.Int64 // bench events of no current step (late or unparsable)
}

type conn struct {
	ws   *websocket.Conn
	user int
	buf  []byte
}

// ConnectResult reports a connect+authenticate phase.
type ConnectResult struct {
	Attempted   int      `json:"attempted"`
	OK          int      `json:"ok"`
	Failed      int      `json:"failed"`
	Seconds     float64  `json:"seconds"`
	PerSecond   float64  `json:"perSecond"`
	LatencyMs   Quantile `json:"latencyMs"`
	FirstErrors []string `json:"firstErrors,omitempty"`
}

// NewPool prepares tokens; Connect opens the sockets.
func NewPool(cfg PoolConfig, base time.Time) *Pool {
	if cfg.Users <= 0 || cfg.Users > cfg.N {
		cfg.Users = cfg.N
	}
	if cfg.ConnectConc <= 0 {
		cfg.ConnectConc = 100
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	p := &Pool{cfg: cfg, base: base, alive: make([]atomic.Int32, cfg.Users), tokens: make([]string, cfg.Users)}
	exp := time.Now().Add(24 * time.Hour).Unix()
	for u := range p.tokens {
		p.tokens[u] = signHS256(cfg.Secret, userID(u), exp)
	}
	return p
}

func userID(u int) string { return "u" + strconv.Itoa(u) }

// Connect opens cfg.N sockets, paced and bounded by ctx.
func (p *Pool) Connect(ctx context.Context) ConnectResult {
	cfg := p.cfg
	dialers := make([]*websocket.Dialer, max(cfg.SrcIPs, 1))
	for i := range dialers {
		nd := &net.Dialer{Timeout: cfg.Timeout}
		if cfg.SrcIPs > 0 {
			nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte((i+2)>>8), byte((i+2)&255))}
		}
		dialers[i] = &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: cfg.Timeout,
			ReadBufferSize: 2048, WriteBufferSize: 512}
	}
	hist := NewHist()
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var firstErrs []string
	sem := make(chan struct{}, cfg.ConnectConc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < cfg.N; i++ {
		if cfg.ConnectRate > 0 {
			due := start.Add(time.Duration(float64(i) / cfg.ConnectRate * 1e9))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		if ctx.Err() != nil {
			failed.Add(int64(cfg.N - i))
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			failed.Add(int64(cfg.N - i))
			i = cfg.N
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			c, err := p.open(ctx, dialers[i%len(dialers)], cfg.Targets[i%len(cfg.Targets)], i%cfg.Users)
			<-sem
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				if len(firstErrs) < 5 {
					firstErrs = append(firstErrs, err.Error())
				}
				errMu.Unlock()
				return
			}
			hist.Record(time.Since(t0).Nanoseconds())
			ok.Add(1)
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.alive[c.user].Add(1)
			p.wg.Add(1)
			go p.readLoop(c)
		}(i)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return ConnectResult{Attempted: cfg.N, OK: int(ok.Load()), Failed: int(failed.Load()), Seconds: secs,
		PerSecond: float64(ok.Load()) / secs, LatencyMs: hist.Quantiles(), FirstErrors: firstErrs}
}

// open dials, does the Engine.IO and Socket.IO handshakes and authenticates.
func (p *Pool) open(ctx context.Context, d *websocket.Dialer, target string, user int) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, target+"/socket.io/?EIO=4&transport=websocket", http.Header{})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &conn{ws: ws, user: user}
	deadline, _ := ctx.Deadline()
	_ = ws.SetReadDeadline(deadline)
	fail := func(what string, err error) (*conn, error) {
		_ = ws.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	m, err := c.read()
	if err != nil || len(m) == 0 || m[0] != '0' {
		return fail("engine.io open", errors.Join(err, fmt.Errorf("got %.40q", m)))
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		return fail("connect", err)
	}
	if err := c.until(func(m []byte) (bool, error) {
		if bytes.HasPrefix(m, []byte("44")) {
			return false, fmt.Errorf("connect refused: %.80s", m)
		}
		return bytes.HasPrefix(m, []byte("40")), nil
	}); err != nil {
		return fail("socket.io connect", err)
	}
	auth := `42["authenticate",{"token":"` + p.tokens[user] + `"}]`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(auth)); err != nil {
		return fail("authenticate", err)
	}
	if err := c.until(func(m []byte) (bool, error) {
		if bytes.HasPrefix(m, []byte(`42["auth_error"`)) {
			return false, fmt.Errorf("%.120s", m)
		}
		return bytes.HasPrefix(m, []byte(`42["authenticated"`)), nil
	}); err != nil {
		return fail("authenticate", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return c, nil
}

// until reads (answering pings) until match says done.
func (c *conn) until(match func([]byte) (bool, error)) error {
	for {
		m, err := c.read()
		if err != nil {
			return err
		}
		if len(m) == 1 && m[0] == '2' {
			if err := c.ws.WriteMessage(websocket.TextMessage, []byte("3")); err != nil {
				return err
			}
			continue
		}
		if done, err := match(m); done || err != nil {
			return err
		}
	}
}

// read reads one message into the socket's reused buffer.
func (c *conn) read() ([]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	b := c.buf[:0]
	if cap(b) == 0 {
		b = make([]byte, 0, 256)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			c.buf = b
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

var benchPrefix = []byte(`42["bench",`)

func (p *Pool) readLoop(c *conn) {
	defer p.wg.Done()
	for {
		m, err := c.read()
		if err != nil {
			p.alive[c.user].Add(-1)
			if !p.closing.Load() {
				p.dropped.Add(1)
			}
			return
		}
		switch {
		case len(m) == 1 && m[0] == '2':
			if c.ws.WriteMessage(websocket.TextMessage, []byte("3")) != nil {
				p.alive[c.user].Add(-1)
				p.dropped.Add(1)
				_ = c.ws.Close()
				return
			}
		case bytes.HasPrefix(m, benchPrefix):
			now := time.Since(p.base).Nanoseconds()
			r, ok1 := field(m, `"r":`)
			s, ok2 := field(m, `"s":`)
			t, ok3 := field(m, `"t":`)
			st := p.step.Load()
			if !ok1 || !ok2 || !ok3 || st == nil || r != st.id || s < 0 || s >= int64(len(st.received)) {
				p.stray.Add(1)
				continue
			}
			st.received[s].Add(1)
			st.recvTotal.Add(1)
			st.record(t, now-t)
		}
	}
}

// field parses the integer after key.
func field(m []byte, key string) (int64, bool) {
	i := bytes.Index(m, []byte(key))
	if i < 0 {
		return 0, false
	}
	var v int64
	j := i + len(key)
	start := j
	for ; j < len(m) && m[j] >= '0' && m[j] <= '9'; j++ {
		v = v*10 + int64(m[j]-'0')
	}
	return v, j > start
}

// Alive is the number of open authenticated sockets.
func (p *Pool) Alive() int {
	n := 0
	for i := range p.alive {
		n += int(p.alive[i].Load())
	}
	return n
}

// Close closes every socket and waits for the readers (bounded).
func (p *Pool) Close() {
	p.closing.Store(true)
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.Close()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}
