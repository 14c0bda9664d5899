package node

import (
	"context"
	"fmt"
	"testing"
)

// A burst to one user, far above WRITE_QUEUE (a batch emit, say), reaches a
// client that reads at full speed: only a client that stops reading is cut.
func TestBurstAboveWriteQueueIsDelivered(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.WriteQueue = 16 })
	c := tn.authed(t, "burst", "burst@x")
	sv := tn.n.Service()
	const n = 500
	for i := range n {
		if err := sv.Emit(context.Background(), "burst", "tick", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		c.expect(fmt.Sprintf(`42["tick",%d]`, i))
	}
	if got := tn.n.metrics.slowConsumers.Load(); got != 0 {
		t.Fatalf("%d slow consumers", got)
	}
}

// The same on long-polling: a client that keeps polling gets the whole burst.
func TestPollingBurstAboveWriteQueueIsDelivered(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.WriteQueue = 16 })
	c := newPollClient(t, tn.srv, "/socket.io/")
	c.handshake()
	c.authenticate("burst", "burst@x")
	sv := tn.n.Service()
	const n = 500
	for i := range n {
		if err := sv.Emit(context.Background(), "burst", "tick", i); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < n {
		p := c.packets()
		if len(p) == 0 {
			t.Fatalf("an empty poll after %d packets", len(got))
		}
		got = append(got, p...)
	}
	for i, p := range got {
		if want := fmt.Sprintf(`42["tick",%d]`, i); p != want {
			t.Fatalf("packet %d: %q, want %q", i, p, want)
		}
	}
	if n := tn.n.metrics.slowConsumers.Load(); n != 0 {
		t.Fatalf("%d slow consumers", n)
	}
}
