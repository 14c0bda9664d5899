// Command hubnode runs the real-time node of the Multi-Platform Messaging Hub.
//
//	hubnode            serve (configuration from the environment; see README)
//	hubnode version    print the version
//	hubnode token      print an access token signed with JWT_SECRET (development aid)
//	hubnode healthcheck exit 0 when the local node is ready (for images without curl)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/messaging-hub/hubnode/config"
	"github.com/messaging-hub/hubnode/node"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "hubnode", buildVersion())
			return 0
		case "token":
			return tokenCommand(args[1:], stdout, stderr)
		case "healthcheck":
			return healthcheck(stderr)
		case "serve":
		default:
			fmt.Fprintf(stderr, "hubnode: unknown command %q (commands: serve, version, token, healthcheck)\n", args[0])
			return 2
		}
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "hubnode:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	if err := serve(cfg, log, stderr); err != nil {
		log.Error("hubnode stopped", zap.Error(err))
		return 1
	}
	return 0
}

func serve(cfg config.Config, log *zap.Logger, stderr io.Writer) error {
	ctx := context.Background()
	be, err := newBackend(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer be.close()
	secret, apiKey := []byte(cfg.JWTSecret), cfg.APIKey
	if cfg.DevMode() {
		secret = []byte(randomHex(32))
		if apiKey == "" {
			apiKey = randomHex(16)
		}
		log.Warn("DEVELOPMENT MODE: JWT_SECRET is not set; using a random secret and API key for this run only. Never run like this in production.")
	}
	if (cfg.JWTPublicKeyFile != "" || cfg.JWTJWKSURL != "") && (cfg.JWTIssuer == "" || cfg.JWTAudience == "") {
		log.Warn("JWT_ISSUER or JWT_AUDIENCE is not set: any unexpired token signed by these keys is accepted, " +
			"including tokens the issuer made for other services")
	}
	n, err := node.New(node.Options{
		NodeID:         cfg.NodeID,
		AllowedOrigins: cfg.FrontendURLs,
		Auth: node.AuthOptions{
			Secret:         secret,
			PublicKeyFile:  cfg.JWTPublicKeyFile,
			JWKSURL:        cfg.JWTJWKSURL,
			JWKSRefresh:    cfg.JWTJWKSRefresh,
			JWKSMinRefresh: cfg.JWTJWKSMinRefresh,
			ExpiryGrace:    cfg.JWTExpiryGrace,
			Issuer:         cfg.JWTIssuer,
			Audience:       cfg.JWTAudience,
			Leeway:         cfg.JWTLeeway,
		},
		AuthTimeout:        cfg.AuthTimeout,
		PingInterval:       cfg.PingInterval,
		PingTimeout:        cfg.PingTimeout,
		MaxPayload:         cfg.MaxPayload,
		APIKey:             apiKey,
		WriteQueue:         cfg.WriteQueue,
		MaxConnections:     cfg.MaxConnections,
		ConnectRate:        cfg.ConnectRate,
		ConnectBurst:       cfg.ConnectBurst,
		MaxUnauthenticated: cfg.MaxUnauthenticated,
		EventRate:          cfg.EventRate,
		EventBurst:         cfg.EventBurst,
		RecoveryWindow:     cfg.RecoveryWindow,
		HistoryMaxLen:      cfg.HistoryMaxLen,
		Adapter:            be.adapter,
		Presence:           be.presence,
		Redis:              be.redis,
		Logger:             log,
	})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return err
	}
	if cfg.PprofAddr != "" {
		if err := servePprof(cfg.PprofAddr, log); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("hubnode listening", zap.String("addr", ln.Addr().String()),
		zap.String("mode", be.mode), zap.String("version", buildVersion()))
	if cfg.DevMode() {
		printDevBanner(stderr, cfg, secret, apiKey)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	select {
	case err := <-served:
		return err
	case s := <-sig:
		log.Info("signal received: draining", zap.String("signal", s.String()), zap.Duration("timeout", cfg.ShutdownTimeout))
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	drainErr := n.Shutdown(sctx) // readiness fails first, then transports close
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP server shutdown", zap.Error(err))
	}
	log.Info("hubnode stopped", zap.NamedError("drain", drainErr))
	return nil
}

func newLogger(cfg config.Config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	if cfg.LogFormat == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	zc.DisableStacktrace = true
	return zc.Build(zap.Fields(zap.String("node", cfg.NodeID)))
}

// printDevBanner shows what a developer needs to try the node at once. The
// demo credentials are the only secrets hubnode ever prints.
func printDevBanner(w io.Writer, cfg config.Config, secret []byte, apiKey string) {
	token, err := node.SignToken(secret, "demo-user", "demo@example.com", 24*time.Hour)
	if err != nil {
		return
	}
	host := cfg.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	fmt.Fprintf(w, `
==================== hubnode DEVELOPMENT MODE ====================
JWT_SECRET is not set: this run uses a random secret and API key.
Set JWT_SECRET (and API_KEY) for anything but a local trial.

Demo user: demo-user <demo@example.com>
Token (24 h): %s

In a browser console (socket.io-client loaded):
  const s = io(%q, {transports: ["websocket"]});
  s.on("connect", () => s.emit("authenticate", {token: %q}));
  s.onAny((event, data) => console.log(event, data));

Emit to the demo user:
  curl -X POST %s/api/v1/users/demo-user/events/new_message \
    -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"message":{"id":"1","text":"hello"}}'
===================================================================
`, token, base, token, base, apiKey)
}

// tokenCommand prints a token signed with JWT_SECRET, for trying a node.
func tokenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "user id (the token's sub claim; required)")
	email := fs.String("email", "", "the email claim")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	secret := os.Getenv("JWT_SECRET")
	if secret == "" || *sub == "" {
		fmt.Fprintln(stderr, "usage: JWT_SECRET=... hubnode token -sub USER [-email E] [-ttl 1h]")
		return 2
	}
	token, err := node.SignToken([]byte(secret), *sub, *email, *ttl)
	if err != nil {
		fmt.Fprintln(stderr, "hubnode token:", err)
		return 1
	}
	fmt.Fprintln(stdout, token)
	return 0
}

// healthcheck asks the node on this machine's PORT whether it is ready.
func healthcheck(stderr io.Writer) int {
	port := os.Getenv("PORT")
	if port == "" {
		port = "3000"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort("127.0.0.1", port) + "/health/ready")
	if err != nil {
		fmt.Fprintln(stderr, "hubnode healthcheck:", err)
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "hubnode healthcheck: not ready:", resp.Status)
		return 1
	}
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
