package node

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

var offsetEventRE = regexp.MustCompile(`^42\["(\w+)",(\d+),"([0-9a-f]{16}:[0-9-]{24})"\]$`)

// recoveringClient connects with a CONNECT payload and returns the client and
// the reply's sid and pid.
func connectWith(t *testing.T, tn *testNode, payload string) (*wsClient, string, string) {
	t.Helper()
	c := tn.dial(t, nil)
	c.send("40" + payload)
	got := c.nextText()
	var reply map[string]string
	if !strings.HasPrefix(got, "40{") || json.Unmarshal([]byte(got[2:]), &reply) != nil {
		t.Fatalf("connect reply %q", got)
	}
	return c, reply["sid"], reply["pid"]
}

// numbered reads a numbered event with its offset.
func numbered(t *testing.T, c *wsClient, name string, n int) string {
	t.Helper()
	got := c.nextText()
	m := offsetEventRE.FindStringSubmatch(got)
	if m == nil || m[1] != name || m[2] != itoa(n) {
		t.Fatalf("got %q, want %s #%d with an offset", got, name, n)
	}
	return m[3]
}

func itoa(n int) string { return jsonNumber(n) }

func jsonNumber(n int) string { b, _ := json.Marshal(n); return string(b) }

func emitN(t *testing.T, tn *testNode, user, name string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := tn.n.Service().Emit(context.Background(), user, name, i); err != nil {
			t.Fatal(err)
		}
	}
}

func testRecovery(t *testing.T, first, second *testNode) {
	token := mustToken(t, "u1", "", time.Hour)
	c, sid, pid := connectWith(t, first, "")
	if len(pid) != 20 || sid == pid {
		t.Fatalf("sid %q pid %q: want a 20-char pid distinct from the sid", sid, pid)
	}
	c.authenticate(token, "u1", "")
	emitN(t, first, "u1", "n", 1, 3)
	var last string
	for i := 1; i <= 3; i++ {
		last = numbered(t, c, "n", i)
	}
	c.close()
	eventually(t, "the first connection gone", func() bool { return first.n.open.Load() == 0 })
	emitN(t, first, "u1", "n", 4, 6) // missed

	r, sid2, pid2 := connectWith(t, second, `{"pid":"`+pid+`","offset":"`+last+`"}`)
	if sid2 != sid || pid2 != pid {
		t.Fatalf("recovered reply sid %q pid %q, want the same %q %q", sid2, pid2, sid, pid)
	}
	// Nothing is replayed before authentication, even what is emitted now.
	emitN(t, first, "u1", "n", 7, 7)
	r.expectNothing()
	r.authenticate(token, "u1", "")
	for i := 4; i <= 7; i++ {
		numbered(t, r, "n", i)
	}
	emitN(t, second, "u1", "n", 8, 8) // then live
	numbered(t, r, "n", 8)
	r.expectNothing()
}

func TestRecoveryMemory(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.RecoveryWindow = time.Minute })
	testRecovery(t, tn, tn)
}

func TestRecoveryAcrossNodes(t *testing.T) {
	_, ns := newClusterWith(t, 2, func(o *Options) { o.RecoveryWindow = time.Minute })
	testRecovery(t, ns[0], ns[1])
}

func TestRecoveryRefusedOffsets(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.RecoveryWindow = time.Minute })
	_, _, pid := connectWith(t, tn, "")
	for _, off := range []string{"garbage", "0123456789abcdef:000000000000000000000001-0", ""} {
		_, _, pid2 := connectWith(t, tn, `{"pid":"`+pid+`","offset":"`+off+`"}`)
		if pid2 == pid || len(pid2) != 20 {
			t.Errorf("offset %q: pid %q, want a fresh one", off, pid2)
		}
	}
}

func TestRecoveryWithTokenInConnect(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.RecoveryWindow = time.Minute })
	token := mustToken(t, "u2", "", time.Hour)
	c, _, pid := connectWith(t, tn, `{"token":"`+token+`"}`)
	c.expect(`42["authenticated",{"userId":"u2","email":""}]`)
	emitN(t, tn, "u2", "m", 1, 1)
	last := numbered(t, c, "m", 1)
	c.close()
	eventually(t, "gone", func() bool { return tn.n.open.Load() == 0 })
	emitN(t, tn, "u2", "m", 2, 3)
	r, _, pid2 := connectWith(t, tn, `{"token":"`+token+`","pid":"`+pid+`","offset":"`+last+`"}`)
	if pid2 != pid {
		t.Fatalf("pid %q, want %q", pid2, pid)
	}
	r.expect(`42["authenticated",{"userId":"u2","email":""}]`)
	numbered(t, r, "m", 2)
	numbered(t, r, "m", 3)
}

func TestRecoveryOffHasNoPID(t *testing.T) {
	tn := newTestNode(t, nil)
	_, _, pid := connectWith(t, tn, "")
	if pid != "" {
		t.Fatalf("pid %q with recovery off", pid)
	}
}

func TestRecoveryHTTPReturnsOffsets(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.RecoveryWindow = time.Minute })
	c := tn.authed(t, "u3", "")
	r := tn.api(t, "POST", "/api/v1/emit", `[{"userId":"u3","event":"a","data":1},{"userId":"u3","event":"a","data":2}]`)
	var body struct {
		Accepted int      `json:"accepted"`
		Offsets  []string `json:"offsets"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Accepted != 2 || len(body.Offsets) != 2 {
		t.Fatalf("emit answer %s", r.body)
	}
	for i, want := range body.Offsets {
		if got := numbered(t, c, "a", i+1); got != want {
			t.Errorf("event %d offset %q, the API said %q", i+1, got, want)
		}
	}
	r = tn.api(t, "POST", "/api/v1/users/u3/events/error", `{"error":"x"}`)
	if !strings.Contains(r.body, `"offset":"`) {
		t.Errorf("typed emit answer %s has no offset", r.body)
	}
}

// A client may recover while its old connection is still open on the
// server (a half-open network): both count in presence until the old one is
// reaped, and reaping it leaves the recovered one counted.
func TestRecoveryWhileOldConnectionOpen(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.RecoveryWindow = time.Minute })
	token := mustToken(t, "u5", "", time.Hour)
	old, _, pid := connectWith(t, tn, "")
	old.authenticate(token, "u5", "")
	emitN(t, tn, "u5", "n", 1, 1)
	last := numbered(t, old, "n", 1)
	r, _, pid2 := connectWith(t, tn, `{"pid":"`+pid+`","offset":"`+last+`"}`)
	if pid2 != pid {
		t.Fatalf("not recovered")
	}
	r.authenticate(token, "u5", "")
	count := func() int {
		c, _ := tn.n.Service().GetUserConnectionCount(context.Background(), "u5")
		return c
	}
	if c := count(); c != 2 {
		t.Fatalf("%d connections while both are open, want 2", c)
	}
	old.close()
	eventually(t, "the old connection reaped", func() bool { return tn.n.open.Load() == 1 })
	if c := count(); c != 1 {
		t.Fatalf("%d connections after the old one closed, want 1", c)
	}
}
