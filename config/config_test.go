package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// varsOf lists the variables named by the errors joined in err, in order.
func varsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error is not joined: %v", err)
	}
	var vars []string
	for _, e := range j.Unwrap() {
		var ve *varError
		if !errors.As(e, &ve) {
			t.Fatalf("error does not name a variable: %v", e)
		}
		if !strings.HasPrefix(e.Error(), "config: "+ve.Var+": ") {
			t.Fatalf("error %q does not start with config: %s:", e, ve.Var)
		}
		vars = append(vars, ve.Var)
	}
	return vars
}

func TestDefaults(t *testing.T) {
	c, err := LoadFrom(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Host:            "",
		Port:            3000,
		FrontendURLs:    []string{"http://localhost:5173"},
		JWTLeeway:       5 * time.Second,
		AuthTimeout:     10 * time.Second,
		PingInterval:    25 * time.Second,
		PingTimeout:     20 * time.Second,
		MaxPayload:      1000000,
		NodeID:          c.NodeID, // checked in TestNodeIDDefault
		LogLevel:        "info",
		LogFormat:       "json",
		ShutdownTimeout: 25 * time.Second,
		MaxConnections:  0,
		WriteQueue:      32,
		EventRate:       5,
		EventBurst:      20,
		RecoveryWindow:  2 * time.Minute,
		HistoryMaxLen:   500,
		RecordEmitter:   true,
	}
	want.JWTJWKSRefresh, want.JWTJWKSMinRefresh, want.JWTExpiryGrace = 10*time.Minute, 30*time.Second, 30*time.Second
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if !c.DevMode() {
		t.Error("DevMode() = false without JWT_SECRET")
	}
	if got := c.Addr(); got != ":3000" {
		t.Errorf("Addr() = %q, want %q", got, ":3000")
	}
	// Empty values fall back to defaults too.
	c2, err := LoadFrom(map[string]string{"PORT": "", "FRONTEND_URL": "", "NODE_ID": ""})
	if err != nil || c2.Port != 3000 || !slices.Equal(c2.FrontendURLs, want.FrontendURLs) || c2.NodeID == "" {
		t.Errorf("empty values: got %+v, %v", c2, err)
	}
}

func TestAllSet(t *testing.T) {
	c, err := LoadFrom(map[string]string{
		"HOST":                "127.0.0.1",
		"PORT":                "4000",
		"FRONTEND_URL":        "https://App.Example.com/, http://localhost:3000",
		"JWT_SECRET":          "0123456789abcdef",
		"JWT_ISSUER":          "https://auth.example.com",
		"JWT_AUDIENCE":        "hubnode",
		"JWT_LEEWAY":          "0",
		"AUTH_TIMEOUT":        "1m30s",
		"PING_INTERVAL":       "30000",
		"PING_TIMEOUT":        "10m",
		"MAX_PAYLOAD":         "1024",
		"API_KEY":             "fedcba9876543210",
		"REDIS_URL":           "rediss://:pw@redis.internal:6380/2",
		"NODE_ID":             "node-a.1_B",
		"LOG_LEVEL":           "DEBUG",
		"LOG_FORMAT":          "Console",
		"SHUTDOWN_TIMEOUT":    "5s",
		"MAX_CONNECTIONS":     "10000",
		"WRITE_QUEUE":         "65536",
		"CONNECT_RATE":        "250.5",
		"CONNECT_BURST":       "500",
		"MAX_UNAUTHENTICATED": "1000",
		"EVENT_RATE":          "2",
		"EVENT_BURST":         "4",
		"RECOVERY_WINDOW":     "30s",
		"HISTORY_MAX_LEN":     "50",
		"RECORD_EMITTER":      "false",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Host:               "127.0.0.1",
		Port:               4000,
		FrontendURLs:       []string{"https://app.example.com", "http://localhost:3000"},
		JWTSecret:          "0123456789abcdef",
		JWTIssuer:          "https://auth.example.com",
		JWTAudience:        "hubnode",
		JWTLeeway:          0,
		AuthTimeout:        90 * time.Second,
		PingInterval:       30 * time.Second,
		PingTimeout:        10 * time.Minute,
		MaxPayload:         1024,
		APIKey:             "fedcba9876543210",
		RedisURL:           "rediss://:pw@redis.internal:6380/2",
		NodeID:             "node-a.1_B",
		LogLevel:           "debug",
		LogFormat:          "console",
		ShutdownTimeout:    5 * time.Second,
		MaxConnections:     10000,
		WriteQueue:         65536,
		ConnectRate:        250.5,
		ConnectBurst:       500,
		MaxUnauthenticated: 1000,
		EventRate:          2,
		EventBurst:         4,
		RecoveryWindow:     30 * time.Second,
		HistoryMaxLen:      50,
		RecordEmitter:      false,
	}
	want.JWTJWKSRefresh, want.JWTJWKSMinRefresh, want.JWTExpiryGrace = 10*time.Minute, 30*time.Second, 30*time.Second
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if c.DevMode() {
		t.Error("DevMode() = true with JWT_SECRET set")
	}
	if got := c.Addr(); got != "127.0.0.1:4000" {
		t.Errorf("Addr() = %q", got)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() on loaded config: %v", err)
	}
}

func TestLoadReadsProcessEnv(t *testing.T) {
	t.Setenv("PORT", "4321")
	t.Setenv("PING_TIMEOUT", "1500")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 4321 || c.PingTimeout != 1500*time.Millisecond {
		t.Errorf("got Port %d, PingTimeout %s", c.Port, c.PingTimeout)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		key, value string
		want       string // full text of the only error, or a part of it
	}{
		{"PORT", "abc", `config: PORT: invalid value "abc": invalid syntax`},
		{"PORT", "99999999999", `config: PORT: invalid value "99999999999": value out of range`},
		{"PORT", "0", "config: PORT: must be between 1 and 65535 (got 0)"},
		{"PORT", "65536", "config: PORT: must be between 1 and 65535 (got 65536)"},
		{"FRONTEND_URL", "ftp://example.com", `config: FRONTEND_URL: "ftp://example.com": scheme must be http or https`},
		{"FRONTEND_URL", "https://example.com/app", "no user info, path, query or fragment"},
		{"FRONTEND_URL", "https://example.com?x=1", "no user info, path, query or fragment"},
		{"FRONTEND_URL", "https://example.com/#top", "no user info, path, query or fragment"},
		{"FRONTEND_URL", "https://u@example.com", "no user info, path, query or fragment"},
		{"FRONTEND_URL", "example.com", `config: FRONTEND_URL: "example.com" is not an origin like https://example.com`},
		{"FRONTEND_URL", "http://", "is not an origin"},
		{"FRONTEND_URL", "http://host:", "is not an origin"},
		{"FRONTEND_URL", "*,http://a.com", `config: FRONTEND_URL: "*" cannot be combined with other origins`},
		{"FRONTEND_URL", " , ,", "config: FRONTEND_URL: must list at least one origin"},
		{"JWT_SECRET", "short", "config: JWT_SECRET: must be at least 16 bytes when set"},
		{"JWT_LEEWAY", "-1s", "config: JWT_LEEWAY: must be between 0s and 5m0s (got -1s)"},
		{"JWT_LEEWAY", "301000", "config: JWT_LEEWAY: must be between 0s and 5m0s (got 5m1s)"},
		{"AUTH_TIMEOUT", "0", "config: AUTH_TIMEOUT: must be greater than 0 (got 0s)"},
		{"AUTH_TIMEOUT", "6m", "config: AUTH_TIMEOUT: must be at most 5m0s (got 6m0s)"},
		{"AUTH_TIMEOUT", "ten", `config: AUTH_TIMEOUT: invalid value "ten": want a duration like "10s" or an integer of milliseconds`},
		{"AUTH_TIMEOUT", "-5", `config: AUTH_TIMEOUT: invalid value "-5": want a duration`},
		{"AUTH_TIMEOUT", "99999999999999999", "config: AUTH_TIMEOUT: invalid value \"99999999999999999\": milliseconds out of range"},
		{"PING_INTERVAL", "0s", "config: PING_INTERVAL: must be greater than 0 (got 0s)"},
		{"PING_INTERVAL", "11m", "config: PING_INTERVAL: must be at most 10m0s (got 11m0s)"},
		{"PING_TIMEOUT", "0", "config: PING_TIMEOUT: must be greater than 0 (got 0s)"},
		{"PING_TIMEOUT", "600001", "config: PING_TIMEOUT: must be at most 10m0s (got 10m0.001s)"},
		{"MAX_PAYLOAD", "1023", "config: MAX_PAYLOAD: must be between 1024 and 100000000 (got 1023)"},
		{"MAX_PAYLOAD", "100000001", "config: MAX_PAYLOAD: must be between 1024 and 100000000 (got 100000001)"},
		{"MAX_PAYLOAD", "1MB", `config: MAX_PAYLOAD: invalid value "1MB": invalid syntax`},
		{"API_KEY", "123456789012345", "config: API_KEY: must be at least 16 bytes when set"},
		{"REDIS_URL", "http://redis:6379", `config: REDIS_URL: scheme must be redis, rediss or unix (got "http")`},
		{"REDIS_URL", "localhost:6379", `config: REDIS_URL: scheme must be redis, rediss or unix (got "localhost")`},
		{"REDIS_URL", "redis://", "config: REDIS_URL: must have a host"},
		{"REDIS_URL", "unix://", "config: REDIS_URL: must have a host"},
		{"REDIS_URL", "redis://a b", "config: REDIS_URL: not a valid URL"},
		{"NODE_ID", "a b", `config: NODE_ID: must match ^[A-Za-z0-9._-]{1,64}$ (got "a b")`},
		{"NODE_ID", strings.Repeat("n", 65), "config: NODE_ID: must match"},
		{"LOG_LEVEL", "trace", `config: LOG_LEVEL: must be one of debug, info, warn, error (got "trace")`},
		{"LOG_FORMAT", "text", `config: LOG_FORMAT: must be one of json, console (got "text")`},
		{"SHUTDOWN_TIMEOUT", "0", "config: SHUTDOWN_TIMEOUT: must be greater than 0 (got 0s)"},
		{"SHUTDOWN_TIMEOUT", "10m1s", "config: SHUTDOWN_TIMEOUT: must be at most 10m0s (got 10m1s)"},
		{"MAX_CONNECTIONS", "-1", "config: MAX_CONNECTIONS: must be 0 (unlimited) or more (got -1)"},
		{"MAX_CONNECTIONS", "many", `config: MAX_CONNECTIONS: invalid value "many": invalid syntax`},
		{"WRITE_QUEUE", "15", "config: WRITE_QUEUE: must be between 16 and 65536 (got 15)"},
		{"WRITE_QUEUE", "65537", "config: WRITE_QUEUE: must be between 16 and 65536 (got 65537)"},
		{"CONNECT_RATE", "-1", "config: CONNECT_RATE: must be 0 (off) to 1000000 per second (got -1)"},
		{"MAX_UNAUTHENTICATED", "-1", "config: MAX_UNAUTHENTICATED: must be between 0 and 100000000 (got -1)"},
		{"EVENT_RATE", "0", "config: EVENT_RATE: must be above 0 and at most 1000000 per second (got 0)"},
		{"EVENT_BURST", "0", "config: EVENT_BURST: must be between 1 and 1000000 (got 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			_, err := LoadFrom(map[string]string{tt.key: tt.value})
			if got := varsOf(t, err); !slices.Equal(got, []string{tt.key}) {
				t.Fatalf("errors name %v, want [%s]; error: %v", got, tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	_, err := LoadFrom(map[string]string{
		"PORT": "abc", "PING_TIMEOUT": "0", "LOG_LEVEL": "loud", "WRITE_QUEUE": "x",
	})
	want := []string{"PORT", "WRITE_QUEUE", "PING_TIMEOUT", "LOG_LEVEL"} // parse errors first
	if got := varsOf(t, err); !slices.Equal(got, want) {
		t.Fatalf("errors name %v, want %v; error: %v", got, want, err)
	}
}

func TestValidate(t *testing.T) {
	if got := varsOf(t, (Config{}).Validate()); len(got) < 5 || !slices.Contains(got, "NODE_ID") {
		t.Errorf("zero Config: errors name %v", got)
	}
	c, err := LoadFrom(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.PingTimeout = -time.Second
	if err := c.Validate(); err == nil || err.Error() != "config: PING_TIMEOUT: must be greater than 0 (got -1s)" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"10000", 10 * time.Second},
		{"1", time.Millisecond},
		{"000250", 250 * time.Millisecond},
		{"10s", 10 * time.Second},
		{"1m30s", 90 * time.Second},
		{"1.5s", 1500 * time.Millisecond},
		{"300ms", 300 * time.Millisecond},
	}
	for _, tt := range tests {
		c, err := LoadFrom(map[string]string{"AUTH_TIMEOUT": tt.in, "SHUTDOWN_TIMEOUT": tt.in})
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if c.AuthTimeout != tt.want || c.ShutdownTimeout != tt.want {
			t.Errorf("%q: got %s and %s, want %s", tt.in, c.AuthTimeout, c.ShutdownTimeout, tt.want)
		}
	}
}

func TestFrontendURLs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"*", []string{"*"}},
		{" * ", []string{"*"}},
		{"http://localhost:5173/", []string{"http://localhost:5173"}},
		{"HTTPS://App.Example.COM:8443", []string{"https://app.example.com:8443"}},
		{" https://a.com , ,http://b.com/,", []string{"https://a.com", "http://b.com"}},
		{"http://[::1]:3000", []string{"http://[::1]:3000"}},
		{"http://127.0.0.1", []string{"http://127.0.0.1"}},
	}
	for _, tt := range tests {
		c, err := LoadFrom(map[string]string{"FRONTEND_URL": tt.in})
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if !slices.Equal(c.FrontendURLs, tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, c.FrontendURLs, tt.want)
		}
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const jwt, key, pw = "jwt-Secret-42", "key-Secret-42", "redis-Pass-42"
	for _, redis := range []string{
		"http://user:" + pw + "@redis:6379",     // bad scheme
		"redis://user:" + pw + "@redis:port",    // bad port
		"redis://user:" + pw + "%zz@redis:6379", // bad escape
		"redis://user:" + pw + " x@redis",       // bad character
	} {
		env := map[string]string{"JWT_SECRET": jwt, "API_KEY": key, "REDIS_URL": redis}
		_, err := LoadFrom(env)
		want := []string{"JWT_SECRET", "API_KEY", "REDIS_URL"}
		if got := varsOf(t, err); !slices.Equal(got, want) {
			t.Fatalf("REDIS_URL %q: errors name %v, want %v", redis, got, want)
		}
		for _, s := range []string{jwt, key, pw, "Secret", "Pass"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error shows %q: %v", s, err)
			}
		}
	}
	// Origins with a password are redacted too.
	_, err := LoadFrom(map[string]string{"FRONTEND_URL": "https://me:" + pw + "@a.com"})
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("FRONTEND_URL error shows the password: %v", err)
	}
}

func TestNodeIDDefault(t *testing.T) {
	c, err := LoadFrom(nil)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := os.Hostname(); err == nil && nodeIDRe.MatchString(h) {
		if c.NodeID != h {
			t.Errorf("NodeID = %q, want hostname %q", c.NodeID, h)
		}
	} else if !strings.HasPrefix(c.NodeID, "node-") {
		t.Errorf("NodeID = %q, want node-xxxxxx", c.NodeID)
	}

	random := regexp.MustCompile(`^node-[0-9a-f]{6}$`)
	orig := hostname
	t.Cleanup(func() { hostname = orig })
	for _, fake := range []func() (string, error){
		func() (string, error) { return "", errors.New("no hostname") },
		func() (string, error) { return "bad host!", nil },
	} {
		hostname = fake
		a, errA := LoadFrom(nil)
		b, errB := LoadFrom(nil)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if !random.MatchString(a.NodeID) || !random.MatchString(b.NodeID) || a.NodeID == b.NodeID {
			t.Errorf("fallback NodeIDs %q, %q: want two different node-xxxxxx", a.NodeID, b.NodeID)
		}
	}
	hostname = func() (string, error) { return "should-not-be-used", nil }
	if c, _ := LoadFrom(map[string]string{"NODE_ID": "pod-7"}); c.NodeID != "pod-7" {
		t.Errorf("NodeID = %q, want pod-7", c.NodeID)
	}
}

func TestJWTKeySources(t *testing.T) {
	dir := t.TempDir()
	keyFile := dir + "/jwt.pem"
	if err := os.WriteFile(keyFile, []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret, jwks = "0123456789abcdef0123", "https://auth.example.com/.well-known/jwks.json"

	t.Run("public key file", func(t *testing.T) {
		c, err := LoadFrom(map[string]string{"JWT_PUBLIC_KEY_FILE": keyFile})
		if err != nil || c.JWTPublicKeyFile != keyFile || c.DevMode() {
			t.Errorf("got %q, DevMode %v, %v", c.JWTPublicKeyFile, c.DevMode(), err)
		}
	})
	t.Run("JWKS URL and its timings", func(t *testing.T) {
		c, err := LoadFrom(map[string]string{"JWT_JWKS_URL": jwks, "JWT_JWKS_REFRESH": "1h", "JWT_JWKS_MIN_REFRESH": "5000", "JWT_EXPIRY_GRACE": "0"})
		if err != nil || c.JWTJWKSURL != jwks || c.DevMode() {
			t.Fatalf("got %q, DevMode %v, %v", c.JWTJWKSURL, c.DevMode(), err)
		}
		if c.JWTJWKSRefresh != time.Hour || c.JWTJWKSMinRefresh != 5*time.Second || c.JWTExpiryGrace != 0 {
			t.Errorf("got refresh %s, min %s, grace %s", c.JWTJWKSRefresh, c.JWTJWKSMinRefresh, c.JWTExpiryGrace)
		}
		if _, err := LoadFrom(map[string]string{"JWT_JWKS_URL": "http://auth:8080/jwks"}); err != nil {
			t.Errorf("plain http: %v", err)
		}
	})
	t.Run("none is development mode", func(t *testing.T) {
		if c, err := LoadFrom(nil); err != nil || !c.DevMode() {
			t.Errorf("DevMode %v, %v", c.DevMode(), err)
		}
	})

	for _, tt := range []struct {
		name string
		env  map[string]string
		vars []string
		want string
	}{
		{"secret and key file", map[string]string{"JWT_SECRET": secret, "JWT_PUBLIC_KEY_FILE": keyFile},
			[]string{"JWT_PUBLIC_KEY_FILE"}, "config: JWT_PUBLIC_KEY_FILE: cannot be combined with JWT_SECRET: set only one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL"},
		{"secret and JWKS", map[string]string{"JWT_SECRET": secret, "JWT_JWKS_URL": jwks},
			[]string{"JWT_JWKS_URL"}, "config: JWT_JWKS_URL: cannot be combined with JWT_SECRET"},
		{"key file and JWKS", map[string]string{"JWT_PUBLIC_KEY_FILE": keyFile, "JWT_JWKS_URL": jwks},
			[]string{"JWT_JWKS_URL"}, "config: JWT_JWKS_URL: cannot be combined with JWT_PUBLIC_KEY_FILE"},
		{"all three", map[string]string{"JWT_SECRET": secret, "JWT_PUBLIC_KEY_FILE": keyFile, "JWT_JWKS_URL": jwks},
			[]string{"JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL"}, "cannot be combined with JWT_SECRET"},
		{"missing key file", map[string]string{"JWT_PUBLIC_KEY_FILE": dir + "/absent.pem"},
			[]string{"JWT_PUBLIC_KEY_FILE"}, "no such file or directory"},
		{"key file is a directory", map[string]string{"JWT_PUBLIC_KEY_FILE": dir},
			[]string{"JWT_PUBLIC_KEY_FILE"}, "is not a regular file"},
		{"JWKS scheme", map[string]string{"JWT_JWKS_URL": "ftp://auth/jwks"},
			[]string{"JWT_JWKS_URL"}, `config: JWT_JWKS_URL: scheme must be https or http (got "ftp")`},
		{"JWKS without host", map[string]string{"JWT_JWKS_URL": "https:///jwks"},
			[]string{"JWT_JWKS_URL"}, "config: JWT_JWKS_URL: must have a host"},
		{"JWKS refresh too short", map[string]string{"JWT_JWKS_REFRESH": "59s", "JWT_JWKS_MIN_REFRESH": "1s"},
			[]string{"JWT_JWKS_REFRESH"}, "config: JWT_JWKS_REFRESH: must be between 1m0s and 24h0m0s (got 59s)"},
		{"JWKS min refresh above refresh", map[string]string{"JWT_JWKS_REFRESH": "1m", "JWT_JWKS_MIN_REFRESH": "2m"},
			[]string{"JWT_JWKS_MIN_REFRESH"}, "config: JWT_JWKS_MIN_REFRESH: must be between 1s and JWT_JWKS_REFRESH (1m0s) (got 2m0s)"},
		{"JWKS min refresh zero", map[string]string{"JWT_JWKS_MIN_REFRESH": "0"},
			[]string{"JWT_JWKS_MIN_REFRESH"}, "(got 0s)"},
		{"negative grace", map[string]string{"JWT_EXPIRY_GRACE": "-1s"},
			[]string{"JWT_EXPIRY_GRACE"}, "config: JWT_EXPIRY_GRACE: must be between 0s and 1h0m0s (got -1s)"},
		{"grace above an hour", map[string]string{"JWT_EXPIRY_GRACE": "61m"},
			[]string{"JWT_EXPIRY_GRACE"}, "(got 1h1m0s)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFrom(tt.env)
			if got := varsOf(t, err); !slices.Equal(got, tt.vars) {
				t.Fatalf("errors name %v, want %v; error: %v", got, tt.vars, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}

	// A JWKS URL may carry credentials: errors show none of it.
	_, err := LoadFrom(map[string]string{"JWT_JWKS_URL": "ftp://me:Pass-42@auth/jwks?key=Key-42"})
	if err == nil || strings.Contains(err.Error(), "Pass-42") || strings.Contains(err.Error(), "Key-42") {
		t.Errorf("JWT_JWKS_URL error shows credentials: %v", err)
	}
	if _, err = LoadFrom(map[string]string{"JWT_JWKS_URL": "https://me:Pass-42@auth/%zz"}); err == nil || strings.Contains(err.Error(), "Pass-42") {
		t.Errorf("JWT_JWKS_URL error shows credentials: %v", err)
	}
}
