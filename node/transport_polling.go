package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/messaging-hub/hubnode/node/engineio"
)

// releaseDelay bounds how long an idle GET waits during an upgrade.
const releaseDelay = 100 * time.Millisecond

// Errors of the polling transport; each closes the session.
var (
	errOverlap    = errors.New("overlapping polling request")
	errPollClosed = errors.New("polling transport closed")
	errQueueFull  = errors.New("polling queue full")
	errClientGone = errors.New("poll connection closed prematurely")
)

// pollingTransport carries a session over HTTP long-polling: packets queue
// until the client's pending GET takes them all at once. A held GET parks
// its goroutine on a channel; it burns nothing while it waits.
type pollingTransport struct {
	e   *engineSession
	max int // queued packets before the session is closed as a slow consumer

	mu        sync.Mutex
	queue     []engineio.Packet
	wake      chan struct{} // capacity 1: "look at the queue again"
	getActive bool
	posting   bool
	closing   bool // send the close packet, then nothing more
	paused    bool // an upgrade is probing: answer GETs at once, with a noop if idle
	retired   bool // upgraded or closed by the client: later requests are refused
	finalSent bool // the last answer of a closed session (close packet or noop) went out
}

func newPollingTransport(e *engineSession, max int) *pollingTransport {
	return &pollingTransport{e: e, max: max, wake: make(chan struct{}, 1)}
}

func (p *pollingTransport) name() string { return "polling" }

func (p *pollingTransport) backlog() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

func (p *pollingTransport) writeText(b []byte) error {
	return p.push(engineio.Packet{Type: engineio.Type(b[0] - '0'), Data: b[1:]})
}

func (p *pollingTransport) writeBinary(b []byte) error {
	return p.push(engineio.Packet{Type: engineio.Message, Data: b, Binary: true})
}

func (p *pollingTransport) push(pkt engineio.Packet) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || p.retired {
		return errPollClosed
	}
	if len(p.queue) >= p.max {
		// The client stopped polling or cannot keep up: end the session
		// (it reconnects) rather than grow without bound. The caller holds
		// the session lock, so the close runs on its own goroutine.
		p.closing = true
		p.queue = nil
		p.signal()
		p.e.n.metrics.slowConsumers.Add(1)
		go p.e.close(reasonSlowConsumer)
		return errQueueFull
	}
	p.queue = append(p.queue, pkt)
	p.signal()
	return nil
}

func (p *pollingTransport) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close ends polling. With flush, what is queued goes out first and the
// close packet follows in a later response: socket.io-client handles an
// Engine.IO close at once but Socket.IO packets a tick later, so a
// DISCONNECT sharing a response with the close would be lost (Node, too,
// flushes before closing). Without flush, the queue is dropped and only a
// GET already waiting hears the close; later requests get 400, as from Node.
func (p *pollingTransport) close(flush bool) {
	p.mu.Lock()
	p.closing = true
	if !flush {
		p.queue = nil
	}
	if !p.getActive && len(p.queue) == 0 {
		p.finalSent = true
	}
	p.signal()
	p.mu.Unlock()
}

// abort ends polling without a close packet: the pending GET is released
// with a noop (the client asked to close, or is gone).
func (p *pollingTransport) abort() {
	p.mu.Lock()
	p.closing, p.retired = true, true
	p.queue = nil
	p.signal()
	p.mu.Unlock()
}

// pause answers GETs at once while an upgrade probes the WebSocket, so the
// client can stop polling.
func (p *pollingTransport) pause(on bool) {
	p.mu.Lock()
	p.paused = on
	p.signal()
	p.mu.Unlock()
}

// retire ends polling for an upgraded session and hands back what was still
// queued, to be sent in order on the WebSocket.
func (p *pollingTransport) retire() []engineio.Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = true
	q := p.queue
	p.queue = nil
	p.signal()
	return q
}

// poll serves one GET: it waits for packets and returns them all.
func (p *pollingTransport) poll(ctx context.Context) ([]engineio.Packet, error) {
	p.mu.Lock()
	if p.getActive {
		p.mu.Unlock()
		return nil, errOverlap
	}
	if p.finalSent || (p.retired && !p.closing) {
		p.mu.Unlock()
		return nil, errPollClosed
	}
	p.getActive = true
	// While an upgrade probes, an idle GET is released with a noop after at
	// most releaseDelay, as Node does; if the upgrade completes meanwhile,
	// the GET is refused like any request after it.
	var release <-chan time.Time
wait:
	for len(p.queue) == 0 && !p.closing && !p.retired {
		if p.paused && release == nil {
			release = time.After(releaseDelay)
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-release:
			p.mu.Lock()
			break wait
		case <-ctx.Done():
			p.mu.Lock()
			p.getActive = false
			p.mu.Unlock()
			return nil, errClientGone
		}
		p.mu.Lock()
	}
	if p.retired && !p.closing { // upgraded while this GET waited
		p.getActive = false
		p.mu.Unlock()
		return nil, errPollClosed
	}
	pkts := p.queue
	p.queue = nil
	switch {
	case p.closing && !p.retired: // closed by the server: flush, then say so
		if len(pkts) == 0 {
			pkts = append(pkts, engineio.Packet{Type: engineio.Close})
			p.finalSent = true
		}
	case p.closing: // closed by the client: release its GET
		pkts = append(pkts, engineio.Packet{Type: engineio.Noop})
		p.finalSent = true
	case len(pkts) == 0: // paused or upgraded: release the client
		pkts = append(pkts, engineio.Packet{Type: engineio.Noop})
	}
	p.getActive = false
	p.mu.Unlock()
	return pkts, nil
}

// beginPost admits one POST at a time.
func (p *pollingTransport) beginPost() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.retired, p.finalSent: // while a closing session still flushes, its POSTs are harmless
		return errPollClosed
	case p.posting:
		return errOverlap
	}
	p.posting = true
	return nil
}

func (p *pollingTransport) endPost() {
	p.mu.Lock()
	p.posting = false
	p.mu.Unlock()
}

// servePolling handles the GET and POST requests of HTTP long-polling.
func (n *Node) servePolling(w http.ResponseWriter, r *http.Request, sid string) {
	if sid == "" {
		n.pollingHandshake(w, r)
		return
	}
	e := n.lookup(sid)
	if e == nil {
		writeEngineError(w, eioUnknownSID)
		return
	}
	p, ok := e.currentTransport().(*pollingTransport)
	if !ok { // the session runs on WebSocket now
		writeEngineError(w, eioBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		n.pollGet(w, r, e, p)
	case http.MethodPost:
		n.pollPost(w, r, e, p)
	default:
		writeEngineError(w, eioBadRequest)
	}
}

func (n *Node) pollingHandshake(w http.ResponseWriter, r *http.Request) {
	e := newEngineSession(n, nil)
	p := newPollingTransport(e, n.opts.WriteQueue)
	e.tr = p
	if !n.track(e) {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	e.open([]string{"websocket"})
	n.pollGet(w, r, e, p)
}

func (n *Node) pollGet(w http.ResponseWriter, r *http.Request, e *engineSession, p *pollingTransport) {
	pkts, err := p.poll(r.Context())
	switch {
	case errors.Is(err, errOverlap):
		// Node closes the session; the pending GET gets the close packet.
		e.close(reasonTransportClose)
		writeEngineError(w, eioBadRequest)
		return
	case errors.Is(err, errClientGone):
		e.close(reasonTransportClose)
		return
	case err != nil:
		writeEngineError(w, eioBadRequest)
		return
	}
	body := engineio.EncodePayload(pkts)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (n *Node) pollPost(w http.ResponseWriter, r *http.Request, e *engineSession, p *pollingTransport) {
	if err := p.beginPost(); err != nil {
		if errors.Is(err, errOverlap) {
			e.close(reasonTransportClose)
		}
		writeEngineError(w, eioBadRequest)
		return
	}
	defer p.endPost()
	// v4 clients always send text (binary as base64), as Node requires.
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/octet-stream") {
		e.close(reasonParseError)
		writeEngineError(w, eioBadRequest)
		return
	}
	body, err := readLimited(r, n.opts.MaxPayload)
	if errors.Is(err, errTooLarge) {
		e.close(reasonTransportClose)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = w.Write([]byte(`{"code":3,"message":"Payload too large"}`))
		return
	}
	if err != nil {
		e.close(reasonTransportClose)
		writeEngineError(w, eioBadRequest)
		return
	}
	pkts, err := engineio.DecodePayload(body)
	if err != nil {
		e.protocolError("undecodable polling payload", err)
		writeEngineError(w, eioBadRequest)
		return
	}
	for _, pkt := range pkts {
		if pkt.Binary {
			e.onBinary(pkt.Data)
		} else {
			e.onPacket(pkt)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok"))
}

var errTooLarge = errors.New("body above MAX_PAYLOAD")

// readLimited reads a request body of at most max bytes.
func readLimited(r *http.Request, max int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > max {
		return nil, errTooLarge
	}
	return body, nil
}
