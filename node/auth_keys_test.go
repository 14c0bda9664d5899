package node

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// --- Asymmetric keys: PEM files and JWKS ---

// testKeyPairs are generated once per test binary (RSA generation is slow
// under the race detector).
type testKeyPairs struct {
	rsa, rsa2 *rsa.PrivateKey
	ec, ec2   *ecdsa.PrivateKey
	ec384     *ecdsa.PrivateKey
	ed, ed2   ed25519.PrivateKey
}

var testKeys = sync.OnceValue(func() *testKeyPairs {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeyPairs
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	_, k.ed2, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return &k
})

// pemPublic encodes public keys as PKIX PEM blocks.
func pemPublic(t *testing.T, pubs ...crypto.PublicKey) []byte {
	t.Helper()
	var out []byte
	for _, pub := range pubs {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	return out
}

// writeKeyFile writes data to a file of a fresh temporary directory.
func writeKeyFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwt-public.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// signKey signs claims with key and method, with a kid header unless kid is "".
func signKey(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// userClaims are valid claims for user, an hour long.
func userClaims(user string) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "email": user + "@x", "exp": time.Now().Add(time.Hour).Unix()}
}

func mustVerify(t *testing.T, v *verifier, token, user string) {
	t.Helper()
	id, err := v.verify(token)
	if err != nil {
		t.Fatalf("verify: %v (%s)", err, err.(*authError).Reason)
	}
	if id.UserID != user {
		t.Fatalf("verify: user %q, want %q", id.UserID, user)
	}
}

func expectRefused(t *testing.T, v *verifier, token, message, reason string) {
	t.Helper()
	_, err := v.verify(token)
	ae, ok := err.(*authError)
	if !ok {
		t.Fatalf("verify accepted the token (err %v), want %s/%s", err, message, reason)
	}
	if ae.Message != message || ae.Reason != reason {
		t.Fatalf("verify: %q/%s, want %q/%s", ae.Message, ae.Reason, message, reason)
	}
}

func newTestVerifier(t *testing.T, o AuthOptions) *verifier {
	t.Helper()
	v, err := newVerifier(o, zap.NewNop())
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	return v
}

// RFC 7638 §3.1 and RFC 8037 A.3: the published thumbprints.
const (
	rfc7638N          = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	rfc8037X          = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	rfc8037Thumbprint = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
)

func TestThumbprintRFCVectors(t *testing.T) {
	keys, skipped, err := parseJWKS([]byte(`{"keys":[
		{"kty":"RSA","n":"` + rfc7638N + `","e":"AQAB"},
		{"kty":"OKP","crv":"Ed25519","x":"` + rfc8037X + `"}]}`))
	if err != nil || len(skipped) != 0 || len(keys) != 2 {
		t.Fatalf("parseJWKS: %d keys, skipped %v, %v", len(keys), skipped, err)
	}
	for i, want := range []string{rfc7638Thumbprint, rfc8037Thumbprint} {
		if keys[i].kid != want || thumbprint(keys[i].pub) != want {
			t.Errorf("key %d: kid %q, thumbprint %q; want %q", i, keys[i].kid, thumbprint(keys[i].pub), want)
		}
	}
	if keys[0].alg != "RS256" || keys[1].alg != "EdDSA" {
		t.Errorf("algorithms %s, %s; want RS256, EdDSA", keys[0].alg, keys[1].alg)
	}
	// A PEM key gets the same thumbprint as its JWK (EC: fixed-size x and y).
	k := testKeys()
	for _, pub := range []crypto.PublicKey{&k.rsa.PublicKey, &k.ec.PublicKey, &k.ec384.PublicKey, k.ed.Public()} {
		j := toJWK(t, pub, "")
		fromJWK, err := j.verifyKey()
		if err != nil {
			t.Fatal(err)
		}
		pemKeys, err := parsePEMKeys(pemPublic(t, pub))
		if err != nil {
			t.Fatal(err)
		}
		if fromJWK.kid != pemKeys[0].kid || len(fromJWK.kid) != 43 {
			t.Errorf("%T: JWK thumbprint %q, PEM %q", pub, fromJWK.kid, pemKeys[0].kid)
		}
	}
}

// toJWK is the public JWK of pub, with kid when not "".
func toJWK(t *testing.T, pub crypto.PublicKey, kid string) jwk {
	t.Helper()
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return jwk{Kty: "RSA", Kid: kid, N: b64.EncodeToString(k.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		p, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		size := (len(p) - 1) / 2
		return jwk{Kty: "EC", Kid: kid, Crv: k.Curve.Params().Name, X: b64.EncodeToString(p[1 : 1+size]), Y: b64.EncodeToString(p[1+size:])}
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Kid: kid, Crv: "Ed25519", X: b64.EncodeToString(k)}
	}
	t.Fatalf("toJWK: %T", pub)
	return jwk{}
}

func jwksJSON(t *testing.T, keys ...jwk) []byte {
	t.Helper()
	b, err := json.Marshal(map[string][]jwk{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPEMKeyFile(t *testing.T) {
	k := testKeys()
	file := writeKeyFile(t, pemPublic(t, &k.rsa.PublicKey, &k.ec.PublicKey, k.ed.Public()))
	v := newTestVerifier(t, AuthOptions{PublicKeyFile: file})
	rsaKid, ecKid, edKid := thumbprint(&k.rsa.PublicKey), thumbprint(&k.ec.PublicKey), thumbprint(k.ed.Public())
	if got := v.keys.current().kids(); strings.Join(got, ",") != rsaKid+","+ecKid+","+edKid {
		t.Fatalf("kids %v", got)
	}
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"RS256 with kid", jwt.SigningMethodRS256, k.rsa, rsaKid},
		{"RS256 without kid", jwt.SigningMethodRS256, k.rsa, ""},
		{"ES256 with kid", jwt.SigningMethodES256, k.ec, ecKid},
		{"ES256 without kid", jwt.SigningMethodES256, k.ec, ""},
		{"EdDSA with kid", jwt.SigningMethodEdDSA, k.ed, edKid},
		{"EdDSA without kid", jwt.SigningMethodEdDSA, k.ed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustVerify(t, v, signKey(t, tc.method, tc.key, tc.kid, userClaims("u1")), "u1")
		})
	}

	t.Run("several keys of one type are tried in turn without kid", func(t *testing.T) {
		v := newTestVerifier(t, AuthOptions{PublicKeyFile: writeKeyFile(t, pemPublic(t, &k.ec2.PublicKey, &k.rsa2.PublicKey, &k.ec.PublicKey, &k.rsa.PublicKey))})
		mustVerify(t, v, signKey(t, jwt.SigningMethodES256, k.ec, "", userClaims("u1")), "u1")
		mustVerify(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, "", userClaims("u1")), "u1")
		mustVerify(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa2, "", userClaims("u2")), "u2")
	})

	t.Run("PKCS #1 and certificate blocks", func(t *testing.T) {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.ec.PublicKey, k.ec)
		if err != nil {
			t.Fatal(err)
		}
		data := append(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		v := newTestVerifier(t, AuthOptions{PublicKeyFile: writeKeyFile(t, append([]byte("# issuer keys\n"), data...))})
		mustVerify(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, rsaKid, userClaims("u1")), "u1")
		mustVerify(t, v, signKey(t, jwt.SigningMethodES256, k.ec, ecKid, userClaims("u1")), "u1")
	})

	t.Run("unusable files are refused at start", func(t *testing.T) {
		small, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		privDER, err := x509.MarshalPKCS8PrivateKey(k.ec)
		if err != nil {
			t.Fatal(err)
		}
		for name, tc := range map[string]struct {
			data []byte
			want string
		}{
			"empty":          {nil, "no PEM public key found"},
			"not PEM":        {[]byte("hello"), "no PEM public key found"},
			"private key":    {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "PEM block 1 is a private key"},
			"1024-bit RSA":   {pemPublic(t, &small.PublicKey), "RSA key of 1024 bits"},
			"corrupt block":  {append(pemPublic(t, k.ed.Public()), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})...), "PEM block 2"},
			"other block":    {pem.EncodeToMemory(&pem.Block{Type: "DH PARAMETERS", Bytes: []byte{1}}), `unsupported type "DH PARAMETERS"`},
			"missing (path)": {nil, "no such file"},
		} {
			path := writeKeyFile(t, tc.data)
			if name == "missing (path)" {
				path += ".absent"
			}
			_, err := New(Options{Auth: AuthOptions{PublicKeyFile: path}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: New: %v; want an error naming the file and %q", name, err, tc.want)
			}
		}
	})

	t.Run("exactly one key source", func(t *testing.T) {
		for _, o := range []AuthOptions{{}, {Secret: []byte(testSecret), PublicKeyFile: file}, {PublicKeyFile: file, JWKSURL: "http://x"}} {
			if _, err := New(Options{Auth: o}); err == nil || !strings.Contains(err.Error(), "exactly one of") {
				t.Errorf("New(%+v): %v", o, err)
			}
		}
	})
}

// TestKeyFileRotation rewrites the key file under a running node: the new
// key is picked up at the next check, the old one stops working, and a
// broken file keeps the keys in use.
func TestKeyFileRotation(t *testing.T) {
	k := testKeys()
	file := writeKeyFile(t, pemPublic(t, &k.rsa.PublicKey))
	tn := newTestNode(t, func(o *Options) { o.Auth = AuthOptions{PublicKeyFile: file} })
	fk := tn.n.verifier.keys.(*fileKeys)
	fk.every = 50 * time.Millisecond // before any client: no concurrent reader yet
	fk.next.Store(0)

	oldKid, newKid := thumbprint(&k.rsa.PublicKey), thumbprint(k.ed.Public())
	tn.connect(t).authenticate(signKey(t, jwt.SigningMethodRS256, k.rsa, oldKid, userClaims("u1")), "u1", "u1@x")

	rewrite := func(data []byte, age time.Duration) {
		t.Helper()
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// An explicit, distinct mtime: coarse file system clocks cannot hide the change.
		mt := time.Now().Add(age)
		if err := os.Chtimes(file, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	rewrite(pemPublic(t, k.ed.Public()), time.Second)
	newToken := signKey(t, jwt.SigningMethodEdDSA, k.ed, newKid, userClaims("u2"))
	eventually(t, "the rewritten key file is picked up", func() bool {
		_, err := tn.n.verifier.verify(newToken)
		return err == nil
	})
	tn.connect(t).authenticate(newToken, "u2", "u2@x")
	expectRefused(t, tn.n.verifier, signKey(t, jwt.SigningMethodRS256, k.rsa, oldKid, userClaims("u1")), msgInvalidToken, "unknown_key")
	expectRefused(t, tn.n.verifier, signKey(t, jwt.SigningMethodRS256, k.rsa, "", userClaims("u1")), msgInvalidToken, "bad_algorithm")

	// A broken rewrite (say, a half-written file) keeps the keys in use.
	rewrite([]byte("-----BEGIN PUBLIC KEY-----\ntruncat"), 2*time.Second)
	time.Sleep(3 * fk.every)
	for range 3 {
		mustVerify(t, tn.n.verifier, newToken, "u2")
		time.Sleep(fk.every)
	}
	// ... and is retried: once complete, it is used.
	rewrite(pemPublic(t, &k.ec.PublicKey), 3*time.Second)
	ecToken := signKey(t, jwt.SigningMethodES256, k.ec, "", userClaims("u3"))
	eventually(t, "the repaired key file is picked up", func() bool {
		_, err := tn.n.verifier.verify(ecToken)
		return err == nil
	})
}

// jwksServer serves a JWK Set that tests can replace, and counts fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	body    []byte
	status  int
	delay   time.Duration
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, status, delay := s.body, s.status, s.delay
		s.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(status int, body []byte) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

// waitFetches waits for background fetches to end, so counts are stable.
func waitFetches(v *verifier) {
	s := v.keys.(*jwksKeys)
	for {
		s.mu.Lock()
		done := s.inflight
		s.mu.Unlock()
		if done == nil {
			return
		}
		<-done
	}
}

func TestJWKS(t *testing.T) {
	k := testKeys()
	set1 := jwksJSON(t, toJWK(t, &k.rsa.PublicKey, "rsa-1"), toJWK(t, &k.ec.PublicKey, "ec-1"))

	t.Run("fetched at start, cached", func(t *testing.T) {
		srv := newJWKSServer(t, set1)
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: time.Hour})
		if n := srv.fetches.Load(); n != 1 {
			t.Fatalf("%d fetches at start, want 1", n)
		}
		for range 20 {
			mustVerify(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", userClaims("u1")), "u1")
			mustVerify(t, v, signKey(t, jwt.SigningMethodES256, k.ec, "ec-1", userClaims("u1")), "u1")
			mustVerify(t, v, signKey(t, jwt.SigningMethodES256, k.ec, "", userClaims("u1")), "u1")
		}
		if n := srv.fetches.Load(); n != 1 {
			t.Errorf("%d fetches after 60 verifications, want 1", n)
		}
	})

	t.Run("forged kids refetch at most once per min refresh", func(t *testing.T) {
		srv := newJWKSServer(t, set1)
		const minRefresh = 600 * time.Millisecond
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: minRefresh})
		forged := make([]string, 200)
		for i := range forged {
			forged[i] = signKey(t, jwt.SigningMethodES256, k.ec2, fmt.Sprintf("forged-%d", i), userClaims("evil"))
		}
		time.Sleep(minRefresh) // the start-up fetch no longer counts against the limit
		start := time.Now()
		var wg sync.WaitGroup
		for _, token := range forged {
			wg.Go(func() {
				if _, err := v.verify(token); err == nil || err.(*authError).Reason != "unknown_key" {
					t.Errorf("forged kid: %v", err)
				}
			})
		}
		wg.Wait()
		waitFetches(v)
		if n := srv.fetches.Load(); n != 2 {
			t.Fatalf("%d fetches for 200 forged kids (in %v), want 2 (start-up + one)", n, time.Since(start))
		}
		// The flood goes on: no fetch until minRefresh has passed.
		for i := range 50 {
			expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa2, fmt.Sprintf("again-%d", i), userClaims("evil")), msgInvalidToken, "unknown_key")
		}
		waitFetches(v)
		if n := srv.fetches.Load(); n != 2 {
			t.Errorf("%d fetches, want still 2", n)
		}
		time.Sleep(minRefresh)
		expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa2, "later", userClaims("evil")), msgInvalidToken, "unknown_key")
		waitFetches(v)
		if n := srv.fetches.Load(); n != 3 {
			t.Errorf("%d fetches after min refresh, want 3", n)
		}
	})

	t.Run("rotation: a new kid is fetched", func(t *testing.T) {
		srv := newJWKSServer(t, set1)
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: 100 * time.Millisecond})
		srv.serve(http.StatusOK, jwksJSON(t, toJWK(t, k.ed.Public(), "ed-2"), toJWK(t, &k.ec.PublicKey, "ec-1")))
		time.Sleep(150 * time.Millisecond)
		mustVerify(t, v, signKey(t, jwt.SigningMethodEdDSA, k.ed, "ed-2", userClaims("u2")), "u2")
		if n := srv.fetches.Load(); n != 2 {
			t.Errorf("%d fetches, want 2", n)
		}
		expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", userClaims("u1")), msgInvalidToken, "unknown_key")
	})

	t.Run("periodic refresh, and errors keep the last good set", func(t *testing.T) {
		srv := newJWKSServer(t, set1)
		const refresh = 200 * time.Millisecond
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: refresh, JWKSMinRefresh: refresh})
		token := signKey(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", userClaims("u1"))
		for i, bad := range []struct {
			status int
			body   string
		}{
			{http.StatusInternalServerError, "oops"},
			{http.StatusOK, "not json"},
			{http.StatusOK, `{"keys":[]}`},
			{http.StatusOK, `{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}`},
			{http.StatusOK, strings.Repeat(" ", maxKeyBytes+1)},
		} {
			srv.serve(bad.status, []byte(bad.body))
			before := srv.fetches.Load()
			time.Sleep(refresh + 20*time.Millisecond)
			mustVerify(t, v, token, "u1") // starts a background refresh
			waitFetches(v)
			if n := srv.fetches.Load(); n != before+1 {
				t.Fatalf("bad set %d: %d fetches, want %d", i, n, before+1)
			}
			mustVerify(t, v, token, "u1")
		}
		// Repaired: the periodic refresh brings in a rotated set.
		srv.serve(http.StatusOK, jwksJSON(t, toJWK(t, &k.ec2.PublicKey, "ec-2")))
		eventually(t, "the refreshed set replaces the old one", func() bool {
			_, err := v.verify(token)
			return err != nil
		})
		waitFetches(v)
		mustVerify(t, v, signKey(t, jwt.SigningMethodES256, k.ec2, "ec-2", userClaims("u2")), "u2")
	})

	t.Run("unreachable at start: refused until it answers", func(t *testing.T) {
		srv := newJWKSServer(t, nil)
		srv.serve(http.StatusServiceUnavailable, nil)
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: 100 * time.Millisecond})
		token := signKey(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", userClaims("u1"))
		expectRefused(t, v, token, msgInvalidToken, "unknown_key")
		expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, "", userClaims("u1")), msgInvalidToken, "unknown_key")
		srv.serve(http.StatusOK, set1)
		time.Sleep(150 * time.Millisecond)
		mustVerify(t, v, token, "u1")
	})

	t.Run("slow endpoint: the fetch is bounded", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits for the 5 s fetch timeout")
		}
		srv := newJWKSServer(t, set1)
		srv.mu.Lock()
		srv.delay = jwksFetchTimeout + 2*time.Second
		srv.mu.Unlock()
		start := time.Now()
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL})
		if d := time.Since(start); d > jwksFetchTimeout+time.Second {
			t.Errorf("start-up fetch took %v", d)
		}
		expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", userClaims("u1")), msgInvalidToken, "unknown_key")
	})

	t.Run("JWK Set content", func(t *testing.T) {
		srv := newJWKSServer(t, jwksJSON(t,
			toJWK(t, &k.rsa.PublicKey, ""),                                // kid: the thumbprint
			jwk{Kty: "oct", Kid: "hmac"},                                  // never a symmetric key
			jwk{Kty: "RSA", Kid: "enc", Use: "enc", N: "AQAB", E: "AQAB"}, // not for signatures
			jwk{Kty: "EC", Kid: "bad-point", Crv: "P-256", X: b64.EncodeToString(make([]byte, 32)), Y: b64.EncodeToString(make([]byte, 32))},
			jwk{Kty: "EC", Kid: "p384-as-es256", Alg: "ES256", Crv: "P-384", X: "AA", Y: "AA"},
			func() jwk { j := toJWK(t, &k.rsa2.PublicKey, "ps256"); j.Alg = "PS256"; return j }(),
			func() jwk { j := toJWK(t, &k.ec.PublicKey, "ec-1"); j.Use = "sig"; j.Alg = "ES256"; return j }(),
		))
		v := newTestVerifier(t, AuthOptions{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: time.Hour})
		if got := strings.Join(v.keys.current().kids(), ","); got != thumbprint(&k.rsa.PublicKey)+",ps256,ec-1" {
			t.Fatalf("kids %s", got)
		}
		mustVerify(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa, thumbprint(&k.rsa.PublicKey), userClaims("u1")), "u1")
		mustVerify(t, v, signKey(t, jwt.SigningMethodPS256, k.rsa2, "ps256", userClaims("u2")), "u2")
		expectRefused(t, v, signKey(t, jwt.SigningMethodRS256, k.rsa2, "ps256", userClaims("u2")), msgInvalidToken, "bad_algorithm")
		expectRefused(t, v, signKey(t, jwt.SigningMethodHS256, []byte("secret"), "hmac", userClaims("u1")), msgInvalidToken, "bad_algorithm")
	})
}

// TestJWKSNode authenticates through a node whose keys come from a JWKS,
// in `authenticate` and in the CONNECT auth, and counts the refusals.
func TestJWKSNode(t *testing.T) {
	k := testKeys()
	srv := newJWKSServer(t, jwksJSON(t, toJWK(t, &k.ec.PublicKey, "ec-1")))
	tn := newTestNode(t, func(o *Options) {
		o.Auth = AuthOptions{JWKSURL: srv.URL, JWKSMinRefresh: time.Hour, Issuer: "https://auth.example.com", Audience: "hubnode"}
	})
	claims := func(user string) jwt.MapClaims {
		c := userClaims(user)
		c["iss"], c["aud"] = "https://auth.example.com", "hubnode"
		return c
	}
	tn.connect(t).authenticate(signKey(t, jwt.SigningMethodES256, k.ec, "ec-1", claims("u1")), "u1", "u1@x")
	c := tn.dial(t, nil)
	c.send(`40{"token":"` + signKey(t, jwt.SigningMethodES256, k.ec, "", claims("u2")) + `"}`)
	c.expectConnectReply()
	c.expect(`42["authenticated",{"userId":"u2","email":"u2@x"}]`)

	for _, token := range []string{
		signKey(t, jwt.SigningMethodES256, k.ec2, "forged", claims("evil")),
		signKey(t, jwt.SigningMethodES256, k.ec, "ec-1", func() jwt.MapClaims { c := claims("u3"); c["iss"] = "https://evil"; return c }()),
		mustToken(t, "u3", "", time.Hour), // HS256
	} {
		c := tn.connect(t)
		c.send(`42["authenticate",{"token":"` + token + `"}]`)
		c.expect(`42["auth_error",{"message":"Invalid token"}]`)
		c.expect(`41`)
		c.expectClosed()
	}
	for reason, want := range map[string]string{"unknown_key": "1", "wrong_issuer_or_audience": "1", "bad_algorithm": "1"} {
		if got := metricValue(t, tn, `hubnode_auth_failures_total{reason="`+reason+`"}`); got != want {
			t.Errorf("auth failures %s = %s, want %s", reason, got, want)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches, want 1", n)
	}
}
