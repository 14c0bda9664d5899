package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// --- 10. HTTP API ---

func TestAPIDisabledWithoutKey(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.APIKey = "" })
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/api/v1/emit", `{"userId":"u1","event":"x"}`},
		{http.MethodPost, "/api/v1/users/u1/events/new_message", `{"message":{}}`},
		{http.MethodPost, "/api/v1/users/u1/disconnect", ""},
		{http.MethodGet, "/api/v1/users/u1/presence", ""},
		{http.MethodGet, "/api/v1/stats", ""},
	} {
		for _, key := range []string{"", "anything"} {
			r := tn.do(t, tc.method, tc.path, key, tc.body, nil)
			expectJSONError(t, fmt.Sprintf("%s %s (key %q)", tc.method, tc.path, key), r, http.StatusServiceUnavailable)
		}
	}
	r := tn.do(t, http.MethodGet, "/api/v1/openapi.yaml", "", "", nil)
	expectStatus(t, "openapi.yaml without API key configured", r, http.StatusOK, string(openAPISpec))
}

func TestAPIRequiresKey(t *testing.T) {
	tn := newTestNode(t, nil)
	for _, hdr := range []http.Header{
		nil,
		{"Authorization": {"Bearer wrong-key"}},
		{"Authorization": {"Bearer " + testAPIKey + "x"}},
		{"Authorization": {"Basic " + testAPIKey}},
		{"Authorization": {testAPIKey}},
	} {
		r := tn.do(t, http.MethodGet, "/api/v1/stats", "", "", hdr)
		expectJSONError(t, fmt.Sprintf("stats with %v", hdr), r, http.StatusUnauthorized)
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
		}
	}
	r := tn.do(t, http.MethodPost, "/api/v1/emit", "wrong", `{"userId":"u1","event":"x"}`, nil)
	expectJSONError(t, "emit with a wrong key", r, http.StatusUnauthorized)

	r = tn.do(t, http.MethodGet, "/api/v1/openapi.yaml", "", "", nil)
	expectStatus(t, "openapi.yaml without a key", r, http.StatusOK, string(openAPISpec))
	if !strings.Contains(r.body, "openapi") {
		t.Errorf("openapi.yaml does not look like an OpenAPI document")
	}
}

func TestAPIEmit(t *testing.T) {
	tn := newTestNode(t, nil)
	u1 := tn.authed(t, "u1", "e@x")
	u2 := tn.authed(t, "u2", "f@x")

	r := tn.api(t, http.MethodPost, "/api/v1/emit", `{"userId":"u1","event":"custom","data":{"a": 1, "b": [true, null]}}`)
	expectStatus(t, "single emit", r, http.StatusAccepted, `{"accepted":1}`)
	u1.expect(`42["custom",{"a":1,"b":[true,null]}]`)

	r = tn.api(t, http.MethodPost, "/api/v1/emit", `{"userId":"u1","event":"bare"}`)
	expectStatus(t, "emit without data", r, http.StatusAccepted, `{"accepted":1}`)
	u1.expect(`42["bare"]`)

	r = tn.api(t, http.MethodPost, "/api/v1/emit", ` [
		{"userId":"u1","event":"first","data":1},
		{"userId":"u2","event":"second","data":"two"},
		{"userId":"u1","event":"third","data":[3]}
	]`)
	expectStatus(t, "array emit", r, http.StatusAccepted, `{"accepted":3}`)
	u1.expect(`42["first",1]`)
	u1.expect(`42["third",[3]]`)
	u2.expect(`42["second","two"]`)

	// Emitting to a user without sockets is accepted (nobody receives it).
	r = tn.api(t, http.MethodPost, "/api/v1/emit", `{"userId":"nobody","event":"x","data":1}`)
	expectStatus(t, "emit to an absent user", r, http.StatusAccepted, `{"accepted":1}`)

	tooMany := make([]string, maxBatch+1)
	for i := range tooMany {
		tooMany[i] = `{"userId":"u1","event":"many","data":` + fmt.Sprint(i) + `}`
	}
	for _, tc := range []struct{ name, body string }{
		{"bad JSON", `{"userId":"u1",`},
		{"not JSON", `hello`},
		{"empty body", ``},
		{"missing userId", `{"event":"x","data":1}`},
		{"empty userId", `{"userId":"","event":"x"}`},
		{"missing event", `{"userId":"u1","data":1}`},
		{"reserved event", `{"userId":"u1","event":"disconnect"}`},
		{"reserved event connect", `{"userId":"u1","event":"connect","data":1}`},
		{"unknown field", `{"userId":"u1","event":"x","dat":1}`},
		{"trailing data", `{"userId":"u1","event":"x"} {"userId":"u1","event":"y"}`},
		{"empty array", `[]`},
		{"more than 1000 items", `[` + strings.Join(tooMany, ",") + `]`},
		{"one bad item in an array", `[{"userId":"u1","event":"ok1"},{"userId":"","event":"x"}]`},
		{"one reserved item in an array", `[{"userId":"u1","event":"ok2"},{"userId":"u1","event":"newListener"}]`},
		{"event above MaxPayload", `{"userId":"u1","event":"big","data":"` + strings.Repeat("x", 1_000_001) + `"}`},
	} {
		r := tn.api(t, http.MethodPost, "/api/v1/emit", tc.body)
		expectJSONError(t, tc.name, r, http.StatusBadRequest)
	}
	// None of the refused requests emitted anything (arrays are validated
	// before any item is sent).
	r = tn.api(t, http.MethodPost, "/api/v1/emit", `{"userId":"u1","event":"marker"}`)
	expectStatus(t, "marker", r, http.StatusAccepted, `{"accepted":1}`)
	u1.expect(`42["marker"]`)
	u2.expectNothing()
}

func TestAPITypedEndpoints(t *testing.T) {
	tn := newTestNode(t, nil)
	c := tn.authed(t, "u1", "e@x")
	for _, tc := range []struct{ event, body, frame string }{
		{"new_message", `{"message":{"id":"m1","text":"hi"}}`,
			`42["new_message",{"message":{"id":"m1","text":"hi"},"timestamp":"TS"}]`},
		{"new_message", `{"message":{"id":"m1"},"conversation":{"id":"c1"}}`,
			`42["new_message",{"message":{"id":"m1"},"conversation":{"id":"c1"},"timestamp":"TS"}]`},
		{"new_message", `{"message":{"id":"m1"},"conversation":null}`,
			`42["new_message",{"message":{"id":"m1"},"timestamp":"TS"}]`},
		{"message_status_update", `{"messageId":"m1","conversationId":"c1","status":"read"}`,
			`42["message_status_update",{"messageId":"m1","conversationId":"c1","status":"read","timestamp":"TS"}]`},
		{"unread_count_update", `{"unreadCounts":{"web":2},"totalUnread":2}`,
			`42["unread_count_update",{"unreadCounts":{"web":2},"totalUnread":2,"timestamp":"TS"}]`},
		{"conversation_update", `{"conversation":{"id":"c1"}}`,
			`42["conversation_update",{"conversation":{"id":"c1"},"timestamp":"TS"}]`},
		{"error", `{"error":"boom","code":"E1"}`,
			`42["error",{"error":"boom","code":"E1","timestamp":"TS"}]`},
		{"error", `{"error":"boom"}`,
			`42["error",{"error":"boom","timestamp":"TS"}]`},
	} {
		r := tn.api(t, http.MethodPost, "/api/v1/users/u1/events/"+tc.event, tc.body)
		expectStatus(t, tc.event+" "+tc.body, r, http.StatusAccepted, `{"accepted":1}`)
		c.expectTS(tc.frame)
	}

	for _, tc := range []struct{ event, body string }{
		{"new_message", `{}`},
		{"new_message", `{"message":"text"}`},
		{"new_message", `{"message":{},"extra":1}`},
		{"message_status_update", `{"messageId":"m1","conversationId":"c1","status":"seen"}`},
		{"message_status_update", `{"messageId":"m1","status":"read"}`},
		{"unread_count_update", `{"totalUnread":1}`},
		{"unread_count_update", `{"unreadCounts":{"web":-1},"totalUnread":0}`},
		{"conversation_update", `{"conversation":[1]}`},
		{"error", `{"code":"E1"}`},
		{"error", `not json`},
	} {
		r := tn.api(t, http.MethodPost, "/api/v1/users/u1/events/"+tc.event, tc.body)
		expectJSONError(t, tc.event+" "+tc.body, r, http.StatusBadRequest)
	}
	for _, event := range []string{"custom", "disconnect", "authenticated"} {
		r := tn.api(t, http.MethodPost, "/api/v1/users/u1/events/"+event, `{"message":{}}`)
		expectJSONError(t, "typed endpoint "+event, r, http.StatusNotFound)
	}
	c.expectNothing()
}

func TestAPIDisconnectPresenceStats(t *testing.T) {
	tn := newTestNode(t, nil)
	a1 := tn.authed(t, "u1", "e@x")
	a2 := tn.authed(t, "u1", "e@x")
	b := tn.authed(t, "u2", "f@x")

	r := tn.api(t, http.MethodGet, "/api/v1/users/u1/presence", "")
	expectStatus(t, "presence u1", r, http.StatusOK, `{"connected":true,"connections":2,"userId":"u1"}`)
	r = tn.api(t, http.MethodGet, "/api/v1/users/u3/presence", "")
	expectStatus(t, "presence u3", r, http.StatusOK, `{"connected":false,"connections":0,"userId":"u3"}`)
	r = tn.api(t, http.MethodGet, "/api/v1/stats", "")
	expectStatus(t, "stats", r, http.StatusOK,
		`{"totalConnections":3,"authenticatedUsers":2,"averageConnectionsPerUser":1.5,"nodes":[{"nodeId":"node-test","connections":3,"authenticatedUsers":2}]}`)

	r = tn.api(t, http.MethodPost, "/api/v1/users/u1/disconnect", "")
	expectStatus(t, "disconnect u1", r, http.StatusAccepted, `{"userId":"u1"}`)
	for _, c := range []*wsClient{a1, a2} {
		c.expect("41")
		c.expectClosed()
	}
	r = tn.api(t, http.MethodGet, "/api/v1/users/u1/presence", "")
	expectStatus(t, "presence u1 after disconnect", r, http.StatusOK, `{"connected":false,"connections":0,"userId":"u1"}`)
	r = tn.api(t, http.MethodGet, "/api/v1/stats", "")
	expectStatus(t, "stats after disconnect", r, http.StatusOK,
		`{"totalConnections":1,"authenticatedUsers":1,"averageConnectionsPerUser":1,"nodes":[{"nodeId":"node-test","connections":1,"authenticatedUsers":1}]}`)
	b.expectNothing()

	r = tn.api(t, http.MethodGet, "/api/v1/unknown", "")
	expectJSONError(t, "unknown API path", r, http.StatusNotFound)
}

func TestHealth(t *testing.T) {
	tn := newTestNode(t, func(o *Options) { o.APIKey = "" })
	tn.authed(t, "u1", "e@x")
	tn.authed(t, "u1", "e@x")
	tn.connect(t)

	r := tn.do(t, http.MethodGet, "/health", "", "", nil)
	expectStatus(t, "health", r, http.StatusOK, "")
	var h struct {
		Status    string `json:"status"`
		Timestamp string `json:"timestamp"`
		NodeID    string `json:"nodeId"`
		Services  struct {
			Redis     string `json:"redis"`
			Websocket struct {
				Status             string `json:"status"`
				Connections        int64  `json:"connections"`
				AuthenticatedUsers int64  `json:"authenticatedUsers"`
			} `json:"websocket"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.body), &h); err != nil {
		t.Fatalf("health body %s: %v", r.body, err)
	}
	if !timestampRE.MatchString(h.Timestamp) {
		t.Errorf("health timestamp %q", h.Timestamp)
	}
	want := `{"status":"ok","timestamp":"TS","nodeId":"node-test","services":{"redis":"disabled","websocket":{"status":"active","connections":3,"authenticatedUsers":1}}}`
	if got := normalizeTS(t, r.body); got != want {
		t.Errorf("health %s\nwant   %s", got, want)
	}

	expectStatus(t, "live", tn.do(t, http.MethodGet, "/health/live", "", "", nil), http.StatusOK, `{"status":"ok"}`)
	expectStatus(t, "ready", tn.do(t, http.MethodGet, "/health/ready", "", "", nil), http.StatusOK, `{"status":"ready"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := tn.n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	expectStatus(t, "ready after Shutdown", tn.do(t, http.MethodGet, "/health/ready", "", "", nil),
		http.StatusServiceUnavailable, `{"reason":"node is shutting down","status":"not ready"}`)
	expectStatus(t, "live after Shutdown", tn.do(t, http.MethodGet, "/health/live", "", "", nil), http.StatusOK, `{"status":"ok"}`)
	r = tn.do(t, http.MethodGet, "/health", "", "", nil)
	want = `{"status":"shutting_down","timestamp":"TS","nodeId":"node-test","services":{"redis":"disabled","websocket":{"status":"draining","connections":0,"authenticatedUsers":0}}}`
	expectStatus(t, "health after Shutdown", r, http.StatusServiceUnavailable, "")
	if got := normalizeTS(t, r.body); got != want {
		t.Errorf("health %s\nwant   %s", got, want)
	}
}

type fakeRedis struct{ err error }

func (f fakeRedis) Healthy(context.Context) error { return f.err }

func TestHealthWithRedis(t *testing.T) {
	up := newTestNode(t, func(o *Options) { o.Redis = fakeRedis{} })
	r := up.do(t, http.MethodGet, "/health", "", "", nil)
	expectStatus(t, "health, redis up", r, http.StatusOK, "")
	// Cluster mode may add fields; the guide's ones must be there.
	want := `"status":"ok","timestamp":"TS","nodeId":"node-test","services":{"redis":"connected","websocket":{"status":"active","connections":0,"authenticatedUsers":0}}`
	if got := normalizeTS(t, r.body); !strings.HasPrefix(got, "{"+want) {
		t.Errorf("health %s\nwant   {%s...}", got, want)
	}
	down := newTestNode(t, func(o *Options) { o.Redis = fakeRedis{errors.New("connection refused")} })
	r = down.do(t, http.MethodGet, "/health", "", "", nil)
	expectStatus(t, "health, redis down", r, http.StatusServiceUnavailable, "")
	if !strings.Contains(r.body, `"status":"degraded"`) || !strings.Contains(r.body, `"redis":"disconnected"`) {
		t.Errorf("health with Redis down: %s", r.body)
	}
	expectStatus(t, "ready, redis down", down.do(t, http.MethodGet, "/health/ready", "", "", nil),
		http.StatusServiceUnavailable, `{"reason":"connection refused","status":"not ready"}`)
}

// --- 11. Origin and CORS ---

func TestOriginCheck(t *testing.T) {
	const allowed = "http://app.example"
	tn := newTestNode(t, func(o *Options) { o.AllowedOrigins = []string{allowed} })

	for _, origin := range []string{"http://evil.example", "https://app.example", "http://app.example:8080", "http://app.example.evil.example", "null"} {
		conn, resp, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), http.Header{"Origin": {origin}})
		if err == nil {
			_ = conn.Close()
			t.Errorf("origin %s: upgrade accepted, want 403", origin)
			continue
		}
		if !errors.Is(err, websocket.ErrBadHandshake) {
			t.Fatalf("origin %s: %v", origin, err)
		}
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %s: status %d, want 403", origin, resp.StatusCode)
		}
		if body := respBody(t, resp); body != `{"code":4,"message":"Forbidden"}` {
			t.Errorf("origin %s: body %s", origin, body)
		}
	}
	if open := tn.n.open.Load(); open != 0 {
		t.Errorf("refused upgrades count as %d sessions", open)
	}

	c := tn.dial(t, http.Header{"Origin": {allowed}})
	if got := c.resp.Header.Get("Access-Control-Allow-Origin"); got != allowed {
		t.Errorf("upgrade response Access-Control-Allow-Origin %q, want %q", got, allowed)
	}
	c.connectNsp()
	c.authenticate(mustToken(t, "u1", "e@x", time.Hour), "u1", "e@x")

	noOrigin := tn.dial(t, nil)
	noOrigin.connectNsp()
	noOrigin.authenticate(mustToken(t, "u2", "f@x", time.Hour), "u2", "f@x")

	// With no allowed origins only clients without an Origin connect.
	closed := newTestNode(t, nil)
	if conn, resp, err := dialURL(closed.wsURL("EIO=4&transport=websocket"), http.Header{"Origin": {allowed}}); err == nil {
		_ = conn.Close()
		t.Error("an origin was accepted with AllowedOrigins empty")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("AllowedOrigins empty: %v, want 403", err)
	}
	closed.dial(t, nil).connectNsp()

	// "*" allows any origin.
	anyOrigin := newTestNode(t, func(o *Options) { o.AllowedOrigins = []string{"*"} })
	anyOrigin.dial(t, http.Header{"Origin": {"http://evil.example"}}).connectNsp()
}

func TestCORSPreflight(t *testing.T) {
	const allowed = "http://app.example"
	tn := newTestNode(t, func(o *Options) { o.AllowedOrigins = []string{allowed} })
	for _, path := range []string{"/socket.io/", "/socket.io"} {
		r := tn.do(t, http.MethodOptions, path+"?EIO=4&transport=polling", "", "", http.Header{
			"Origin":                         {allowed},
			"Access-Control-Request-Method":  {"GET"},
			"Access-Control-Request-Headers": {"authorization"},
		})
		if r.status != http.StatusNoContent {
			t.Errorf("OPTIONS %s from the allowed origin: status %d, want 204", path, r.status)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("OPTIONS %s: Access-Control-Allow-Origin %q, want %q", path, got, allowed)
		}
		if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Errorf("OPTIONS %s: Access-Control-Allow-Credentials %q, want true", path, got)
		}

		r = tn.do(t, http.MethodOptions, path, "", "", http.Header{
			"Origin":                        {"http://evil.example"},
			"Access-Control-Request-Method": {"GET"},
		})
		if got := r.header.Values("Access-Control-Allow-Origin"); len(got) != 0 {
			t.Errorf("OPTIONS %s from a disallowed origin: Access-Control-Allow-Origin %q, want none", path, got)
		}
		if got := r.header.Values("Access-Control-Allow-Credentials"); len(got) != 0 {
			t.Errorf("OPTIONS %s from a disallowed origin: Access-Control-Allow-Credentials %q, want none", path, got)
		}
	}
	// Error responses to an allowed origin carry the CORS headers too.
	r := tn.do(t, http.MethodGet, "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", "", "", http.Header{"Origin": {allowed}})
	expectStatus(t, "polling GET", r, http.StatusBadRequest, `{"code":1,"message":"Session ID unknown"}`)
	if got := r.header.Get("Access-Control-Allow-Origin"); got != allowed {
		t.Errorf("error response Access-Control-Allow-Origin %q, want %q", got, allowed)
	}
	// So does a polling handshake.
	r = tn.do(t, http.MethodGet, "/socket.io/?EIO=4&transport=polling", "", "", http.Header{"Origin": {allowed}})
	if r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != allowed || r.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("polling handshake: %d, ACAO %q, ACAC %q", r.status, r.header.Get("Access-Control-Allow-Origin"), r.header.Get("Access-Control-Allow-Credentials"))
	}
}
