// Command conformance serves hubnode's protocol layer the way the official
// Engine.IO and Socket.IO conformance suites expect (echo servers, ping
// 300/200 ms) on 127.0.0.1:3000, for running those suites by hand:
//
//	go run ./cmd/conformance &
//	cd <copy of socketio/engine.io-protocol>/test-suite && npm ci && npm test
//	cd <copy of socketio/socket.io-protocol>/test-suite && npm ci && npm test
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/messaging-hub/hubnode/node"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address (the suites expect localhost:3000)")
	flag.Parse()
	c, err := node.NewConformance(zap.NewNop())
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *addr, Handler: c, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("conformance server on %s (/engine.io/, /socket.io/)", *addr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
