package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/messaging-hub/hubnode/adapter"
)

// TestConcurrentEmitsAndChurn runs emits (Service, DeliverLocal to all,
// DisconnectUser) while clients connect, authenticate, leave the namespace
// and close, with a fast heartbeat. Under -race it catches unsynchronised
// state; afterwards every counter must be back to zero.
func TestConcurrentEmitsAndChurn(t *testing.T) {
	tn := newTestNode(t, func(o *Options) {
		o.PingInterval = 20 * time.Millisecond
		o.PingTimeout = 200 * time.Millisecond
	})
	tn.autoPong = true
	ctx := context.Background()
	sv := tn.n.Service()
	stop := make(chan struct{})
	var wg sync.WaitGroup

	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("u%d", i%4)
				switch i % 5 {
				case 0:
					_ = sv.EmitNewMessage(ctx, user, map[string]any{"id": i}, nil)
				case 1:
					tn.n.DeliverLocal(&adapter.Message{Nsp: "/", Data: []json.RawMessage{json.RawMessage(`"all"`), json.RawMessage(fmt.Sprint(i))}})
				case 2:
					if i%50 == 2 {
						_ = sv.DisconnectUser(ctx, user)
					}
				default:
					_ = sv.Emit(ctx, user, "tick", i)
				}
				_, _ = sv.GetStats(ctx)
			}
		}()
	}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("u%d", (g+i)%4)
				conn, _, err := dialURL(tn.wsURL("EIO=4&transport=websocket"), nil)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				_ = conn.SetWriteDeadline(time.Now().Add(readTimeout))
				token, _ := SignToken([]byte(testSecret), user, "e@x", time.Hour)
				switch i % 3 {
				case 0: // CONNECT with a token, then close at once
					_ = conn.WriteMessage(1, []byte(`40{"token":"`+token+`"}`))
				case 1: // authenticate, leave the namespace, close
					_ = conn.WriteMessage(1, []byte("40"))
					_ = conn.WriteMessage(1, []byte(`42["authenticate",{"token":"`+token+`"}]`))
					_ = conn.WriteMessage(1, []byte("41"))
				default: // authenticate and stay a little
					_ = conn.WriteMessage(1, []byte("40"))
					_ = conn.WriteMessage(1, []byte(`42["authenticate",{"token":"`+token+`"}]`))
					_ = conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
					for {
						if _, _, err := conn.ReadMessage(); err != nil {
							break
						}
					}
				}
				_ = conn.Close()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()

	eventually(t, "every session to end", func() bool { return tn.n.open.Load() == 0 })
	eventually(t, "presence to be empty", func() bool {
		st, _ := sv.GetStats(ctx)
		return st.TotalConnections == 0 && st.AuthenticatedUsers == 0 && tn.n.users.Load() == 0
	})
	// Every closed socket must have left n.authed (the index that a
	// broadcast to all sockets walks).
	tn.n.mu.Lock()
	var leftovers []string
	for s := range tn.n.authed {
		s.mu.Lock()
		leftovers = append(leftovers, fmt.Sprintf("{user %s, closed %v}", s.user.UserID, s.closed))
		s.mu.Unlock()
	}
	tn.n.mu.Unlock()
	if len(leftovers) != 0 {
		t.Errorf("%d closed sockets still indexed in n.authed: %v", len(leftovers), leftovers)
	}
	for i := 0; i < 4; i++ {
		if c := tn.n.rooms.count(UserRoom(fmt.Sprintf("u%d", i))); c != 0 {
			t.Errorf("room of u%d still holds %d sockets", i, c)
		}
	}
	if p := tn.n.metrics.panics.Load(); p != 0 {
		t.Errorf("%d panics recovered", p)
	}
	// The node still serves.
	c := tn.authed(t, "u0", "e@x")
	if err := sv.Emit(ctx, "u0", "done", true); err != nil {
		t.Fatal(err)
	}
	c.expect(`42["done",true]`)
}
