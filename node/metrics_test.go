package node

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// metricValue returns the sample line of /metrics that starts with series.
func metricValue(t *testing.T, tn *testNode, series string) string {
	t.Helper()
	r := tn.do(t, http.MethodGet, "/metrics", "", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: %d", r.status)
	}
	for line := range strings.SplitSeq(r.body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return "absent"
}

func TestMetricsCountEmitsDeliveriesAndRefusals(t *testing.T) {
	tn := newTestNode(t, nil)
	a := tn.authed(t, "u1", "")
	b := tn.authed(t, "u1", "")
	if err := tn.n.Service().EmitNewMessage(context.Background(), "u1", map[string]int{"id": 1}, nil); err != nil {
		t.Fatal(err)
	}
	a.expectEvent(EventNewMessage)
	b.expectEvent(EventNewMessage)
	tn.api(t, http.MethodPost, "/api/v1/emit", `{"userId":"u1","event":"custom_thing","data":1}`)
	a.expectEvent("custom_thing")
	b.expectEvent("custom_thing")

	bad := tn.connect(t)
	bad.send(`42["authenticate",{"token":"garbage"}]`)
	bad.expectEvent("auth_error")

	for series, want := range map[string]string{
		`hubnode_emits_total{door="go",event="new_message"}`:           "1",
		`hubnode_emits_total{door="http",event="other"}`:               "1",
		`hubnode_broadcasts_total{event="new_message",origin="local"}`: "1",
		`hubnode_deliveries_total`:                                     "4",
		`hubnode_authenticated_users`:                                  "1",
		`hubnode_authenticated_connections`:                            "2",
		`hubnode_auth_failures_total{reason="malformed"}`:              "1",
	} {
		if got := metricValue(t, tn, series); got != want {
			t.Errorf("%s = %s, want %s", series, got, want)
		}
	}
	if got := metricValue(t, tn, `hubnode_http_request_duration_seconds_count{code="2xx",method="POST",route="/api/v1/emit"}`); got != "1" {
		t.Errorf("API latency samples = %s, want 1", got)
	}
}

func TestMetricsRedisSeries(t *testing.T) {
	_, ns := newCluster(t, 2)
	c := ns[1].authed(t, "u1", "")
	if err := ns[0].n.Service().Emit(context.Background(), "u1", "x", 1); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["x",1]`)
	// Counted after the frames are written: the client may see the event first.
	eventually(t, "n2 counts one broadcast from redis", func() bool {
		return metricValue(t, ns[1], `hubnode_broadcasts_total{event="other",origin="redis"}`) == "1"
	})
	if got := metricValue(t, ns[1], "hubnode_redis_received_total"); got != "1" {
		t.Errorf("n2 redis received = %s, want 1", got)
	}
	eventually(t, "a probe round trip measured", func() bool {
		v := metricValue(t, ns[0], "hubnode_redis_pubsub_lag_seconds")
		return v != "absent" && v != "0"
	})
}

func TestEventLabelOf(t *testing.T) {
	for raw, want := range map[string]string{
		`"new_message"`:         "new_message",
		`"new\u005fmessage"`:    "new_message", // escaped: decoded, then looked up
		`"something_else"`:      "other",
		`"unread_count_update"`: "unread_count_update",
		`42`:                    "other",
		`"`:                     "other",
	} {
		if got := eventLabelOf(json.RawMessage(raw)); got != want {
			t.Errorf("eventLabelOf(%s) = %q, want %q", raw, got, want)
		}
	}
	name := json.RawMessage(`"new_message"`)
	if n := testing.AllocsPerRun(100, func() { eventLabelOf(name) }); n != 0 {
		t.Errorf("eventLabelOf allocates %v times per call", n)
	}
}
