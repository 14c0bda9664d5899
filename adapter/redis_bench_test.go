package adapter

// Benchmarks of the Redis adapter against a real redis-server (redistest).
// They also run as a quick smoke test with -benchtime=1x.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rtNopHandler is the sending node's handler: local delivery is not measured.
type rtNopHandler struct{}

func (rtNopHandler) DeliverLocal(*Message)                    {}
func (rtNopHandler) DisconnectLocal([]string, []string, bool) {}

// rtLatencyHandler records publish→delivery latencies carried in Data[1]
// (the send time in unix nanoseconds) and closes done at the n-th delivery.
type rtLatencyHandler struct {
	lat    []int64
	n      atomic.Int64
	done   chan struct{}
	window chan struct{} // released per delivery, bounding the receiver's lag
}

func newRTLatencyHandler(n, window int) *rtLatencyHandler {
	return &rtLatencyHandler{lat: make([]int64, n), done: make(chan struct{}), window: make(chan struct{}, window)}
}

func (h *rtLatencyHandler) DeliverLocal(m *Message) {
	now := time.Now().UnixNano()
	sent, err := strconv.ParseInt(string(m.Data[1]), 10, 64)
	if err != nil {
		return
	}
	i := h.n.Add(1) - 1
	if i >= int64(len(h.lat)) {
		return
	}
	h.lat[i] = now - sent
	<-h.window
	if i == int64(len(h.lat))-1 {
		close(h.done)
	}
}

func (h *rtLatencyHandler) DisconnectLocal([]string, []string, bool) {}

// BenchmarkRedisCrossNodeEmit: node A broadcasts to a room held by node B
// (one go-redis client each, one redis-server). Reports deliveries/s at B and
// the p50/p99 publish→delivery latency. publishers=1 is one emit at a time;
// publishers=16 keeps up to 16 PUBLISHes in flight.
func BenchmarkRedisCrossNodeEmit(b *testing.B) {
	for _, publishers := range []int{1, 16} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			c := newRTCluster(b, 0, RedisOptions{})
			recv := newRTLatencyHandler(b.N, 1024)
			sender := c.startNode("A", RedisOptions{}, rtNopHandler{})
			holder := c.startNode("B", RedisOptions{}, recv)
			c.waitHealthy(5 * time.Second)
			const room = "bench:user"
			holder.addRoom(b, room)

			ctx := context.Background()
			var next atomic.Int64
			var failed atomic.Value
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						recv.window <- struct{}{}
						m := &Message{Nsp: "/", Rooms: []string{room}, Data: []json.RawMessage{
							json.RawMessage(`"new_message"`), json.RawMessage(strconv.FormatInt(time.Now().UnixNano(), 10)),
							json.RawMessage(`{"id":"m1","text":"hello from node A"}`)}}
						if err := sender.Broadcast(ctx, m); err != nil {
							failed.Store(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				b.Fatalf("Broadcast: %v", err)
			}
			select {
			case <-recv.done:
			case <-time.After(30 * time.Second):
				b.Fatalf("B delivered %d of %d emits", recv.n.Load(), b.N)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			lat := slices.Clone(recv.lat)
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e3 }
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			if got := recv.n.Load(); got != int64(b.N) {
				b.Fatalf("B delivered %d emits, want %d", got, b.N)
			}
		})
	}
}

// BenchmarkRedisAddDelRoom: one room subscribe + unsubscribe cycle, i.e.
// AddRoom (returns once Redis confirmed the SUBSCRIBE) and DelRoom (the
// UNSUBSCRIBE after UnsubscribeDelay, 1 ns here); the clock stops when
// Redis has dropped every channel. serial is one caller; parallel is 16
// concurrent callers, which the adapter batches.
func BenchmarkRedisAddDelRoom(b *testing.B) {
	for _, par := range []int{1, 16} {
		name := "serial"
		if par > 1 {
			name = fmt.Sprintf("parallel=%d", par)
		}
		b.Run(name, func(b *testing.B) {
			c := newRTCluster(b, 1, RedisOptions{UnsubscribeDelay: time.Nanosecond})
			n := c.nodes[0]
			subs, unsubs := c.cmdCalls("subscribe"), c.cmdCalls("unsubscribe")
			ctx := context.Background()
			var next atomic.Int64
			var failed atomic.Value
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						room := "ad:" + strconv.FormatInt(i, 10)
						if err := n.AddRoom(ctx, room); err != nil {
							failed.Store(err)
							return
						}
						n.DelRoom(room)
					}
				}()
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				b.Fatalf("AddRoom: %v", err)
			}
			for {
				chans, err := c.admin.PubSubChannels(ctx, rtBase+"ad:*").Result()
				if err != nil {
					b.Fatal(err)
				}
				if len(chans) == 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(c.cmdCalls("subscribe")-subs)/float64(b.N), "SUBSCRIBEs/op")
			b.ReportMetric(float64(c.cmdCalls("unsubscribe")-unsubs)/float64(b.N), "UNSUBSCRIBEs/op")
		})
	}
}
