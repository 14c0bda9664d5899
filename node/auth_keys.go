package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// Public-key verification: keys from a PEM file or a JWK Set (RFC 7517),
// each bound to the one algorithm its type allows, so a public key can never
// serve as an HMAC secret (the "key confusion" attack).

var (
	errUnknownKey   = errors.New("no key for the token's kid")
	errKeyAlgorithm = errors.New("the token's alg does not match its key")
)

// asymmetricMethods is the whitelist with public keys; each key narrows it
// to its own algorithm.
var asymmetricMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

const (
	keyFileCheckEvery = 10 * time.Second
	jwksFetchTimeout  = 5 * time.Second
	// maxKeyBytes bounds a key file and a JWK Set document.
	maxKeyBytes = 1 << 20
	// maxKeys bounds the keys of a set: a token without kid is tried against
	// each key of its algorithm.
	maxKeys = 64
)

// verifyKey is one public key and the algorithm it verifies.
type verifyKey struct {
	kid string // the JWK's kid, else the RFC 7638 thumbprint
	alg string
	pub crypto.PublicKey
}

// keySet is an immutable set of keys.
type keySet struct {
	keys  []*verifyKey
	byKid map[string]*verifyKey
}

func newKeySet(keys []*verifyKey) *keySet {
	ks := &keySet{byKid: make(map[string]*verifyKey, len(keys))}
	for _, k := range keys {
		if _, dup := ks.byKid[k.kid]; dup {
			continue
		}
		ks.keys = append(ks.keys, k)
		ks.byKid[k.kid] = k
	}
	return ks
}

func (ks *keySet) kids() []string {
	out := make([]string, len(ks.keys))
	for i, k := range ks.keys {
		out[i] = k.kid
	}
	return out
}

// keySource supplies the current keys. Implementations are safe for
// concurrent use and never block on I/O in current.
type keySource interface {
	// current returns the keys to verify with now (never nil).
	current() *keySet
	// missing is told of a kid absent from current; it may fetch the keys
	// again (rate-limited) and returns the set to retry with, or nil.
	missing(kid string) *keySet
}

// key is the verifier's jwt.Keyfunc.
func (v *verifier) key(t *jwt.Token) (any, error) {
	if v.keys == nil {
		return v.opts.Secret, nil
	}
	alg := t.Method.Alg()
	if raw, ok := t.Header["kid"]; ok && raw != "" {
		kid, ok := raw.(string)
		if !ok || len(kid) > 256 {
			return nil, errUnknownKey
		}
		k := v.keys.current().byKid[kid]
		if k == nil {
			if ks := v.keys.missing(kid); ks != nil {
				k = ks.byKid[kid]
			}
		}
		switch {
		case k == nil:
			return nil, errUnknownKey
		case k.alg != alg:
			return nil, errKeyAlgorithm
		}
		return k.pub, nil
	}
	ks := v.keys.current()
	var candidates []jwt.VerificationKey
	for _, k := range ks.keys {
		if k.alg == alg {
			candidates = append(candidates, k.pub)
		}
	}
	switch {
	case len(ks.keys) == 0:
		return nil, errUnknownKey
	case len(candidates) == 0:
		return nil, errKeyAlgorithm
	case len(candidates) == 1:
		return candidates[0], nil
	}
	return jwt.VerificationKeySet{Keys: candidates}, nil
}

// newVerifyKey binds pub to its algorithm. alg, from a JWK, may choose
// among the algorithms of the key's type; kid "" means the thumbprint.
func newVerifyKey(pub crypto.PublicKey, kid, alg string) (*verifyKey, error) {
	var want []string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
			return nil, fmt.Errorf("RSA key of %d bits: want 2048 to 8192", bits)
		}
		want = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			want = []string{"ES256"}
		case elliptic.P384():
			want = []string{"ES384"}
		case elliptic.P521():
			want = []string{"ES512"}
		default:
			return nil, errors.New("ECDSA key on an unsupported curve (want P-256, P-384 or P-521)")
		}
	case ed25519.PublicKey:
		want = []string{"EdDSA"}
	default:
		return nil, fmt.Errorf("unsupported key type %T (want RSA, ECDSA or Ed25519)", pub)
	}
	switch {
	case alg == "":
		alg = want[0]
	case !slices.Contains(want, alg):
		return nil, fmt.Errorf("alg %q does not fit the key (want one of %s)", alg, strings.Join(want, ", "))
	}
	if kid == "" {
		kid = thumbprint(pub)
	}
	return &verifyKey{kid: kid, alg: alg, pub: pub}, nil
}

var b64 = base64.RawURLEncoding

// thumbprint is the key's RFC 7638 JWK thumbprint (SHA-256, base64url):
// the hash of its required members in lexicographic order, no whitespace.
func thumbprint(pub crypto.PublicKey) string {
	var members string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		members = `{"e":"` + b64.EncodeToString(e) + `","kty":"RSA","n":"` + b64.EncodeToString(k.N.Bytes()) + `"}`
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || x || y, each of the curve's size
		if err != nil {
			return ""
		}
		size := (len(point) - 1) / 2
		members = `{"crv":"` + k.Curve.Params().Name + `","kty":"EC","x":"` + b64.EncodeToString(point[1:1+size]) +
			`","y":"` + b64.EncodeToString(point[1+size:]) + `"}`
	case ed25519.PublicKey:
		members = `{"crv":"Ed25519","kty":"OKP","x":"` + b64.EncodeToString(k) + `"}`
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(members))
	return b64.EncodeToString(sum[:])
}

// parsePEMKeys reads every public key in a PEM file: PUBLIC KEY (PKIX),
// RSA PUBLIC KEY (PKCS #1) or CERTIFICATE blocks. A private key is an error,
// so that one is never deployed where only the public key belongs.
func parsePEMKeys(data []byte) ([]*verifyKey, error) {
	var keys []*verifyKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub crypto.PublicKey
		var err error
		switch {
		case block.Type == "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case block.Type == "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case block.Type == "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("PEM block %d is a private key: give hubnode the public key only", n)
		default:
			return nil, fmt.Errorf("PEM block %d: unsupported type %q", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		k, err := newVerifyKey(pub, "", "")
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("no PEM public key found")
	case len(keys) > maxKeys:
		return nil, fmt.Errorf("%d keys: at most %d", len(keys), maxKeys)
	}
	return keys, nil
}

// jwk is a JSON Web Key's public members (RFC 7517, 7518, 8037).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS returns the signature keys of a JWK Set, and why others were
// skipped (encryption keys, symmetric keys, unsupported types). A set
// without a usable key is an error.
func parseJWKS(data []byte) ([]*verifyKey, []string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	var keys []*verifyKey
	var skipped []string
	for i, raw := range doc.Keys {
		if len(keys) == maxKeys {
			skipped = append(skipped, fmt.Sprintf("keys after the first %d", maxKeys))
			break
		}
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		k, err := j.verifyKey()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, errors.New("no usable signature key in the JWK Set")
	}
	return keys, skipped, nil
}

func (j *jwk) verifyKey() (*verifyKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %q is not sig", j.Use)
	}
	var pub crypto.PublicKey
	switch j.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		exp := new(big.Int).SetBytes(e).Int64()
		if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
			return nil, errors.New("bad RSA exponent")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC x or y")
		}
		k, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, err
		}
		pub = k
	case "OKP":
		x, err := b64.DecodeString(j.X)
		if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("unsupported OKP key (crv %q)", j.Crv)
		}
		pub = ed25519.PublicKey(x)
	case "oct":
		return nil, errors.New("symmetric keys are never taken from a JWK Set")
	default:
		return nil, fmt.Errorf("unsupported kty %q", j.Kty)
	}
	return newVerifyKey(pub, j.Kid, j.Alg)
}

// fileKeys are the keys of a PEM file, re-read when it changes.
type fileKeys struct {
	path  string
	every time.Duration
	log   *zap.Logger

	set  atomic.Pointer[keySet]
	next atomic.Int64 // unix nanoseconds of the next check

	mu      sync.Mutex // one reload at a time; guards the fields below
	modTime time.Time
	size    int64
}

func newFileKeys(path string, log *zap.Logger) (*fileKeys, error) {
	f := &fileKeys{path: path, every: keyFileCheckEvery, log: log}
	if err := f.reload(); err != nil {
		return nil, fmt.Errorf("node: public key file %s: %w", path, err)
	}
	f.next.Store(time.Now().Add(f.every).UnixNano())
	log.Info("JWT public keys loaded", zap.String("file", path), zap.Strings("kids", f.set.Load().kids()))
	return f, nil
}

// current checks the file when a check is due, without making concurrent
// verifications wait for it.
func (f *fileKeys) current() *keySet {
	now, next := time.Now().UnixNano(), f.next.Load()
	if now >= next && f.next.CompareAndSwap(next, now+int64(f.every)) { // one caller checks
		if err := f.reload(); err != nil {
			f.log.Error("JWT public key file unusable: keeping the previous keys", zap.String("file", f.path), zap.Error(err))
		}
	}
	return f.set.Load()
}

// missing does not re-read the file: its checks follow their own schedule.
func (f *fileKeys) missing(string) *keySet { return nil }

// reload reads the file again if its modification time or size changed.
// A failed read leaves the recorded version alone, so the next check retries.
func (f *fileKeys) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		return err
	}
	if f.set.Load() != nil && fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return nil
	}
	file, err := os.Open(f.path)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(file, maxKeyBytes+1))
	_ = file.Close()
	switch {
	case err != nil:
		return err
	case len(data) > maxKeyBytes:
		return fmt.Errorf("larger than %d bytes", maxKeyBytes)
	}
	keys, err := parsePEMKeys(data)
	if err != nil {
		return err
	}
	first := f.set.Load() == nil
	ks := newKeySet(keys)
	f.set.Store(ks)
	f.modTime, f.size = fi.ModTime(), fi.Size()
	if !first {
		f.log.Info("JWT public key file reloaded", zap.String("file", f.path), zap.Strings("kids", ks.kids()))
	}
	return nil
}

// jwksKeys are the keys of a JWK Set URL, cached.
type jwksKeys struct {
	url        string
	client     *http.Client
	refresh    time.Duration
	minRefresh time.Duration
	log        *zap.Logger

	set atomic.Pointer[keySet]

	mu          sync.Mutex // guards the fields below
	lastAttempt time.Time
	lastOK      bool
	inflight    chan struct{} // closed when the fetch in progress ends
}

func newJWKSKeys(o AuthOptions, log *zap.Logger) *jwksKeys {
	s := &jwksKeys{url: o.JWKSURL, client: o.JWKSClient, refresh: o.JWKSRefresh, minRefresh: o.JWKSMinRefresh, log: log}
	if s.refresh <= 0 {
		s.refresh = 10 * time.Minute
	}
	if s.minRefresh <= 0 {
		s.minRefresh = 30 * time.Second
	}
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableKeepAlives = true
		s.client = &http.Client{Transport: tr, Timeout: jwksFetchTimeout}
	}
	s.set.Store(newKeySet(nil))
	s.mu.Lock()
	done := s.startLocked()
	s.mu.Unlock()
	<-done
	return s
}

// current returns the cached keys, starting a background refresh when
// they are older than refresh (or minRefresh after a failed fetch).
func (s *jwksKeys) current() *keySet {
	s.mu.Lock()
	every := s.refresh
	if !s.lastOK {
		every = s.minRefresh
	}
	if s.inflight == nil && time.Since(s.lastAttempt) >= every {
		s.startLocked()
	}
	s.mu.Unlock()
	return s.set.Load()
}

// missing fetches the set again for an unknown kid, at most once per
// minRefresh, and waits for it; a fetch already under way is joined.
func (s *jwksKeys) missing(string) *keySet {
	s.mu.Lock()
	done := s.inflight
	if done == nil {
		if time.Since(s.lastAttempt) < s.minRefresh {
			s.mu.Unlock()
			return nil
		}
		done = s.startLocked()
	}
	s.mu.Unlock()
	<-done // bounded by jwksFetchTimeout
	return s.set.Load()
}

// startLocked starts a fetch; s.mu must be held.
func (s *jwksKeys) startLocked() chan struct{} {
	done := make(chan struct{})
	s.inflight = done
	s.lastAttempt = time.Now()
	go func() {
		keys, skipped, err := s.fetch()
		s.mu.Lock()
		s.lastOK = err == nil
		if err == nil {
			s.set.Store(newKeySet(keys))
		}
		s.inflight = nil
		close(done)
		s.mu.Unlock()
		if err != nil {
			s.log.Error("JWKS fetch failed: keeping the last good keys", zap.String("url", redactURL(s.url)), zap.Error(err))
			return
		}
		if len(skipped) > 0 {
			s.log.Warn("JWKS keys skipped", zap.String("url", redactURL(s.url)), zap.Strings("skipped", skipped))
		}
		s.log.Debug("JWKS fetched", zap.String("url", redactURL(s.url)), zap.Strings("kids", s.set.Load().kids()))
	}()
	return done
}

func (s *jwksKeys) fetch() ([]*verifyKey, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("status %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyBytes+1))
	switch {
	case err != nil:
		return nil, nil, err
	case len(data) > maxKeyBytes:
		return nil, nil, fmt.Errorf("JWK Set larger than %d bytes", maxKeyBytes)
	}
	return parseJWKS(bytes.TrimSpace(data))
}

// redactURL drops user info and query, which may hold credentials.
func redactURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 && !strings.Contains(rest[:at], "/") {
			rest = rest[at+1:]
		}
		return scheme + "://" + rest
	}
	return raw
}
