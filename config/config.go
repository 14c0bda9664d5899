// Package config reads hubnode's settings from environment variables.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config of a hubnode server, read from the variable in each env tag.
// Durations take Go syntax ("1m30s") or integer milliseconds ("10000").
type Config struct {
	// Host to listen on. Default "" means all interfaces.
	Host string `env:"HOST"`
	// Port to listen on, 1..65535. Default 3000.
	Port int `env:"PORT" envDefault:"3000"`
	// PprofAddr, when set (say "127.0.0.1:6060"), serves Go's
	// /debug/pprof/ there, apart from the public port. Default "": off.
	PprofAddr string `env:"PPROF_ADDR"`
	// FrontendURLs are the allowed CORS origins ("*" = any). Default http://localhost:5173.
	FrontendURLs []string `env:"FRONTEND_URL" envDefault:"http://localhost:5173"`
	// JWTSecret verifies client tokens (HS256), ≥16 bytes. At most one of
	// JWTSecret, JWTPublicKeyFile and JWTJWKSURL; none = dev mode, no checks.
	JWTSecret string `env:"JWT_SECRET"`
	// JWTPublicKeyFile is a PEM file of public keys (RS256, ES256, EdDSA),
	// re-read when it changes. Default "".
	JWTPublicKeyFile string `env:"JWT_PUBLIC_KEY_FILE"`
	// JWTJWKSURL is an http(s) JWK Set of the token issuer's keys. Default "".
	JWTJWKSURL string `env:"JWT_JWKS_URL"`
	// JWTJWKSRefresh is how old the cached JWK Set may get, 1m..24h. Default 10m.
	JWTJWKSRefresh time.Duration `env:"JWT_JWKS_REFRESH" envDefault:"10m"`
	// JWTJWKSMinRefresh is the least time between refetches for unknown
	// kids, 1s..JWT_JWKS_REFRESH. Default 30s.
	JWTJWKSMinRefresh time.Duration `env:"JWT_JWKS_MIN_REFRESH" envDefault:"30s"`
	// JWTExpiryGrace is how long a socket stays after its token expired
	// without refreshing it, 0..1h (0: none). Default 30s.
	JWTExpiryGrace time.Duration `env:"JWT_EXPIRY_GRACE" envDefault:"30s"`
	// JWTIssuer, when set, must equal the token's iss. Default "".
	JWTIssuer string `env:"JWT_ISSUER"`
	// JWTAudience, when set, must be in the token's aud. Default "".
	JWTAudience string `env:"JWT_AUDIENCE"`
	// JWTLeeway tolerates clock skew in token times, 0..5m. Default 5s.
	JWTLeeway time.Duration `env:"JWT_LEEWAY" envDefault:"5s"`
	// AuthTimeout is how long a new socket may take to authenticate, ≤5m. Default 10s.
	AuthTimeout time.Duration `env:"AUTH_TIMEOUT" envDefault:"10s"`
	// PingInterval between Engine.IO pings, ≤10m. Default 25s.
	PingInterval time.Duration `env:"PING_INTERVAL" envDefault:"25s"`
	// PingTimeout waits for a pong before closing, ≤10m. Default 20s.
	PingTimeout time.Duration `env:"PING_TIMEOUT" envDefault:"20s"`
	// MaxPayload is the largest message in bytes, 1024..100000000. Default 1000000.
	MaxPayload int64 `env:"MAX_PAYLOAD" envDefault:"1000000"`
	// APIKey guards the HTTP API, ≥16 bytes. Default "" disables it.
	APIKey string `env:"API_KEY"`
	// RedisURL (redis, rediss or unix) joins nodes. Default "" = single node.
	RedisURL string `env:"REDIS_URL"`
	// NodeID names this node. Default the hostname, else "node-" + 6 hex digits.
	NodeID string `env:"NODE_ID"`
	// LogLevel is debug, info, warn or error. Default "info".
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// LogFormat is json or console. Default "json".
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
	// ShutdownTimeout bounds a graceful shutdown, ≤10m. Default 25s.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
	// MaxConnections caps concurrent sockets. Default 0 means unlimited.
	MaxConnections int `env:"MAX_CONNECTIONS" envDefault:"0"`
	// WriteQueue is melody's per-socket write queue. Default 32: melody
	// preallocates every slot (48 B) for each connection, and a burst beyond
	// three quarters of it is held and paced by the node, not dropped.
	WriteQueue int `env:"WRITE_QUEUE" envDefault:"32"`
	// ConnectRate caps new connections per second on this node (a reconnect
	// storm is spread out; refused clients retry with backoff). Default 0: off.
	ConnectRate float64 `env:"CONNECT_RATE" envDefault:"0"`
	// ConnectBurst is how many new connections may arrive at once above
	// ConnectRate. Default 0: twice ConnectRate.
	ConnectBurst int `env:"CONNECT_BURST" envDefault:"0"`
	// MaxUnauthenticated caps connections that have not authenticated yet
	// (they also time out after AUTH_TIMEOUT). Default 0: no cap.
	MaxUnauthenticated int `env:"MAX_UNAUTHENTICATED" envDefault:"0"`
	// EventRate is the sustained events per second one socket may send; the
	// guide's clients send a handful per connection. Default 5.
	EventRate float64 `env:"EVENT_RATE" envDefault:"5"`
	// EventBurst is how many events a socket may send at once. Default 20.
	EventBurst int `env:"EVENT_BURST" envDefault:"20"`
	// RecoveryWindow is how long emits to a user are kept so a client that
	// reconnects within it receives what it missed. Default 2m; 0 turns
	// recovery off.
	RecoveryWindow time.Duration `env:"RECOVERY_WINDOW" envDefault:"2m"`
	// HistoryMaxLen bounds the events kept per user. Default 500.
	HistoryMaxLen int `env:"HISTORY_MAX_LEN" envDefault:"500"`
	// RecordEmitter records the events @socket.io/redis-emitter sends to a
	// user too (cluster mode, RecoveryWindow set), through an elected
	// recorder node, so they carry offsets. Default true; false delivers
	// them at once, unrecoverable, at less than half the CPU cost.
	RecordEmitter bool `env:"RECORD_EMITTER" envDefault:"true"`
}

// Load reads the process environment.
func Load() (Config, error) { return LoadFrom(env.ToMap(os.Environ())) }

// LoadFrom reads the given environment instead of the process one.
func LoadFrom(environ map[string]string) (Config, error) {
	if environ == nil {
		environ = map[string]string{} // env would read os.Environ for nil
	}
	var c Config
	err := env.ParseWithOptions(&c, env.Options{
		Environment: environ,
		FuncMap:     map[reflect.Type]env.ParserFunc{reflect.TypeFor[time.Duration](): parseDuration},
	})
	var agg env.AggregateError
	if err != nil && !errors.As(err, &agg) {
		agg.Errors = []error{err}
	}
	var errs []error
	failed := map[string]bool{}
	for _, e := range agg.Errors {
		if ve := parseError(e, environ); ve != nil {
			failed[ve.Var] = true
			errs = append(errs, ve)
		} else { // not about a value: a bug in Config itself
			errs = append(errs, fmt.Errorf("config: %w", e))
		}
	}
	c.normalize()
	for _, e := range c.problems() {
		if !failed[e.(*varError).Var] { // its parse error says enough
			errs = append(errs, e)
		}
	}
	return c, errors.Join(errs...)
}

// Validate reports every invalid field, each error naming its variable.
func (c Config) Validate() error { return errors.Join(c.problems()...) }

// Addr is the listen address, host:port.
func (c Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// DevMode reports that no JWT key (secret, public key file or JWKS URL)
// is set, so hubnode makes up a secret of its own.
func (c Config) DevMode() bool {
	return c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSURL == ""
}

// varError is a problem with one variable. It never holds a secret.
type varError struct{ Var, Msg string }

func (e *varError) Error() string { return "config: " + e.Var + ": " + e.Msg }

func (c Config) problems() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &varError{key, fmt.Sprintf(format, args...)})
	}
	between := func(key string, v, lo, hi int64) {
		if v < lo || v > hi {
			add(key, "must be between %d and %d (got %d)", lo, hi, v)
		}
	}
	positive := func(key string, d, hi time.Duration) {
		if d <= 0 {
			add(key, "must be greater than 0 (got %s)", d)
		} else if d > hi {
			add(key, "must be at most %s (got %s)", hi, d)
		}
	}
	secret := func(key, v string) {
		if v != "" && len(v) < 16 {
			add(key, "must be at least 16 bytes when set")
		}
	}
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, strings.ToLower(v)) {
			add(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), v)
		}
	}

	between("PORT", int64(c.Port), 1, 65535)
	if len(c.FrontendURLs) == 0 {
		add("FRONTEND_URL", "must list at least one origin")
	}
	for _, o := range c.FrontendURLs {
		if o == "*" && len(c.FrontendURLs) > 1 {
			add("FRONTEND_URL", `"*" cannot be combined with other origins`)
		} else if _, msg := normalizeOrigin(o); msg != "" && o != "*" {
			add("FRONTEND_URL", "%s", msg)
		}
	}
	secret("JWT_SECRET", c.JWTSecret)
	var keyVars []string
	for _, v := range []struct{ key, value string }{
		{"JWT_SECRET", c.JWTSecret}, {"JWT_PUBLIC_KEY_FILE", c.JWTPublicKeyFile}, {"JWT_JWKS_URL", c.JWTJWKSURL},
	} {
		if v.value != "" {
			if len(keyVars) > 0 {
				add(v.key, "cannot be combined with %s: set only one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL", keyVars[0])
			}
			keyVars = append(keyVars, v.key)
		}
	}
	if msg := checkKeyFile(c.JWTPublicKeyFile); msg != "" {
		add("JWT_PUBLIC_KEY_FILE", "%s", msg)
	}
	if msg := checkJWKSURL(c.JWTJWKSURL); msg != "" {
		add("JWT_JWKS_URL", "%s", msg)
	}
	if c.JWTJWKSRefresh < time.Minute || c.JWTJWKSRefresh > 24*time.Hour {
		add("JWT_JWKS_REFRESH", "must be between 1m0s and 24h0m0s (got %s)", c.JWTJWKSRefresh)
	}
	if c.JWTJWKSMinRefresh < time.Second || c.JWTJWKSMinRefresh > c.JWTJWKSRefresh {
		add("JWT_JWKS_MIN_REFRESH", "must be between 1s and JWT_JWKS_REFRESH (%s) (got %s)", c.JWTJWKSRefresh, c.JWTJWKSMinRefresh)
	}
	if c.JWTExpiryGrace < 0 || c.JWTExpiryGrace > time.Hour {
		add("JWT_EXPIRY_GRACE", "must be between 0s and 1h0m0s (got %s)", c.JWTExpiryGrace)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		add("JWT_LEEWAY", "must be between 0s and 5m0s (got %s)", c.JWTLeeway)
	}
	positive("AUTH_TIMEOUT", c.AuthTimeout, 5*time.Minute)
	positive("PING_INTERVAL", c.PingInterval, 10*time.Minute)
	positive("PING_TIMEOUT", c.PingTimeout, 10*time.Minute)
	between("MAX_PAYLOAD", c.MaxPayload, 1024, 100_000_000)
	secret("API_KEY", c.APIKey)
	if msg := checkRedisURL(c.RedisURL); msg != "" {
		add("REDIS_URL", "%s", msg)
	}
	if !nodeIDRe.MatchString(c.NodeID) {
		add("NODE_ID", "must match %s (got %q)", nodeIDRe, c.NodeID)
	}
	oneOf("LOG_LEVEL", c.LogLevel, "debug", "info", "warn", "error")
	oneOf("LOG_FORMAT", c.LogFormat, "json", "console")
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 10*time.Minute)
	if c.MaxConnections < 0 {
		add("MAX_CONNECTIONS", "must be 0 (unlimited) or more (got %d)", c.MaxConnections)
	}
	between("WRITE_QUEUE", int64(c.WriteQueue), 16, 65536)
	if c.ConnectRate < 0 || c.ConnectRate > 1e6 {
		add("CONNECT_RATE", "must be 0 (off) to 1000000 per second (got %g)", c.ConnectRate)
	}
	between("CONNECT_BURST", int64(c.ConnectBurst), 0, 10_000_000)
	between("MAX_UNAUTHENTICATED", int64(c.MaxUnauthenticated), 0, 100_000_000)
	if c.EventRate <= 0 || c.EventRate > 1e6 {
		add("EVENT_RATE", "must be above 0 and at most 1000000 per second (got %g)", c.EventRate)
	}
	between("EVENT_BURST", int64(c.EventBurst), 1, 1_000_000)
	if c.RecoveryWindow < 0 || c.RecoveryWindow > time.Hour {
		add("RECOVERY_WINDOW", "must be 0 (off) to 1h (got %s)", c.RecoveryWindow)
	}
	between("HISTORY_MAX_LEN", int64(c.HistoryMaxLen), 1, 100_000)
	return errs
}

// normalize puts parsed values in canonical form; invalid ones stay as
// they are for problems to report.
func (c *Config) normalize() {
	origins := []string{}
	for _, o := range c.FrontendURLs {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if n, msg := normalizeOrigin(o); msg == "" {
			o = n
		}
		origins = append(origins, o)
	}
	c.FrontendURLs = origins
	c.LogLevel = strings.ToLower(c.LogLevel)
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
}

// normalizeOrigin returns o as browsers send it in the Origin header,
// or a problem if o is not an origin.
func normalizeOrigin(o string) (string, string) {
	u, err := url.Parse(o)
	if err != nil || u.Opaque != "" || u.Hostname() == "" || strings.HasSuffix(u.Host, ":") {
		return "", fmt.Sprintf("%q is not an origin like https://example.com", o)
	}
	shown, scheme := u.Redacted(), strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return "", fmt.Sprintf("%q: scheme must be http or https", shown)
	case u.User != nil, u.Path != "" && u.Path != "/", strings.ContainsAny(o, "?#"):
		return "", fmt.Sprintf("%q: an origin has no user info, path, query or fragment", shown)
	}
	return scheme + "://" + strings.ToLower(u.Host), ""
}

// checkRedisURL never returns text from the URL, which may hold a password.
func checkRedisURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return ""
	case err != nil:
		return "not a valid URL (value not shown: it may hold a password)"
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		return fmt.Sprintf("scheme must be redis, rediss or unix (got %q)", u.Scheme)
	case u.Scheme == "unix" && u.Path == "", u.Scheme != "unix" && u.Host == "":
		return "must have a host (redis://host:6379/0) or socket path (unix:///path)"
	}
	return ""
}

// checkKeyFile checks that a set JWT_PUBLIC_KEY_FILE is a readable
// file; its keys are parsed when the node starts.
func checkKeyFile(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return err.Error()
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%q is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	_ = f.Close()
	return ""
}

// checkJWKSURL shows no more of the URL than its scheme: it may carry credentials.
func checkJWKSURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return ""
	case err != nil:
		return "not a valid URL (value not shown: it may hold credentials)"
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Sprintf("scheme must be https or http (got %q)", u.Scheme)
	case u.Host == "":
		return "must have a host (https://auth.example.com/.well-known/jwks.json)"
	}
	return ""
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// hostname is a variable so tests can make it fail.
var hostname = os.Hostname

func defaultNodeID() string {
	if h, err := hostname(); err == nil && nodeIDRe.MatchString(h) {
		return h
	}
	var b [3]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return "node-" + hex.EncodeToString(b[:])
}

// parseDuration accepts a Go duration or a non-negative integer of
// milliseconds, as Node.js users write them.
func parseDuration(s string) (any, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms > math.MaxInt64/int64(time.Millisecond) {
			return nil, errors.New("milliseconds out of range")
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	return nil, errors.New(`want a duration like "10s" or an integer of milliseconds`)
}

// parseError turns env's error about a value into one naming the
// variable, or returns nil for any other error.
func parseError(err error, environ map[string]string) *varError {
	var pe env.ParseError
	if !errors.As(err, &pe) {
		return nil
	}
	f, _ := reflect.TypeFor[Config]().FieldByName(pe.Name)
	key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	cause, ne := pe.Err, (*strconv.NumError)(nil)
	if errors.As(cause, &ne) {
		cause = ne.Err // NumError repeats the value
	}
	if key == "JWT_SECRET" || key == "API_KEY" || key == "REDIS_URL" {
		return &varError{key, "invalid value: " + cause.Error()} // value never shown
	}
	return &varError{key, fmt.Sprintf("invalid value %q: %s", environ[key], cause)}
}
