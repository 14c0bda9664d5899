package node

import (
	"time"

	"github.com/messaging-hub/hubnode/node/engineio"
)

// upgradeTimeout bounds an upgrade from polling to WebSocket, as Node's default.
const upgradeTimeout = 10 * time.Second

// canUpgrade reports whether the session is on polling with no upgrade under way.
func (e *engineSession) canUpgrade() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, polling := e.tr.(*pollingTransport)
	return polling && !e.closed && e.probe == nil
}

// beginUpgrade makes t the candidate WebSocket of a polling session.
func (e *engineSession) beginUpgrade(t *wsTransport) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, polling := e.tr.(*pollingTransport); !polling || e.closed || e.probe != nil {
		return false
	}
	e.probe = t
	e.upgradeTimer = time.AfterFunc(upgradeTimeout, func() { e.abortUpgrade(t) })
	return true
}

// onProbe handles a packet on the candidate WebSocket: "2probe" is answered
// "3probe" and polling is released with a noop; "5" completes the upgrade;
// anything else abandons it.
func (e *engineSession) onProbe(t *wsTransport, b []byte) {
	switch string(b) {
	case "2probe":
		t.probed = true
		_ = t.writeText([]byte("3probe"))
		if p, ok := e.currentTransport().(*pollingTransport); ok {
			p.pause(true)
		}
	case "5":
		if !t.probed {
			e.abortUpgrade(t)
			return
		}
		e.completeUpgrade(t)
	default:
		e.abortUpgrade(t)
	}
}

// completeUpgrade switches the session to the WebSocket: what polling still
// held is written first, in order, and polling refuses every later request.
func (e *engineSession) completeUpgrade(t *wsTransport) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, polling := e.tr.(*pollingTransport)
	if e.closed || e.probe != t || !polling {
		t.close(true)
		return
	}
	e.probe = nil
	e.upgradeTimer.Stop()
	for _, pkt := range p.retire() {
		if pkt.Binary {
			_ = t.writeBinary(pkt.Data)
		} else {
			_ = t.writeText(engineio.AppendText(nil, pkt.Type, pkt.Data))
		}
	}
	e.tr = t
	t.probing.Store(false)
	e.n.metrics.upgrades.Add(1)
}

// abortUpgrade drops the candidate WebSocket; the session stays on polling.
func (e *engineSession) abortUpgrade(t *wsTransport) {
	e.mu.Lock()
	if e.probe != t {
		e.mu.Unlock()
		return
	}
	e.probe = nil
	e.upgradeTimer.Stop()
	p, _ := e.tr.(*pollingTransport)
	e.mu.Unlock()
	if p != nil {
		p.pause(false)
	}
	t.close(true)
}
