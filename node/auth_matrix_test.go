package node

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// --- The token matrix: every bad token is refused with auth_error, the
// documented message and a metrics reason, on a node with JWT_SECRET and
// on one with public keys. ---

const (
	matrixIssuer   = "https://auth.example.com"
	matrixAudience = "hubnode"
)

// matrixClaims are valid claims with the matrix's iss and aud; extra
// overrides them, and a nil value deletes one.
func matrixClaims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "u1", "email": "e@x", "iss": matrixIssuer, "aud": matrixAudience,
		"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// segment is the base64url JSON of v, or v itself when it is a string.
func segment(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func forge(header, claims any, sig string) string {
	return segment(header) + "." + segment(claims) + "." + sig
}

type matrixCase struct {
	name, token, message, reason string
}

// commonMatrix are the cases whatever the keys; sign signs claims validly.
func commonMatrix(t *testing.T, validHeader map[string]any, sign func(jwt.MapClaims) string) []matrixCase {
	now := time.Now()
	valid := sign(matrixClaims(nil))
	parts := strings.Split(valid, ".")
	hdr := func(alg any) map[string]any {
		h := map[string]any{"typ": "JWT"}
		for k, v := range validHeader {
			h[k] = v
		}
		if alg == nil {
			delete(h, "alg")
		} else {
			h["alg"] = alg
		}
		return h
	}
	invalid := func(name, token, reason string) matrixCase { return matrixCase{name, token, msgInvalidToken, reason} }
	manyDots := strings.Repeat(".", 4000)
	return []matrixCase{
		invalid("alg none, no signature", forge(hdr("none"), matrixClaims(nil), ""), "bad_algorithm"),
		invalid("alg none, with the valid signature", forge(hdr("none"), matrixClaims(nil), parts[2]), "bad_algorithm"),
		invalid("alg None", forge(hdr("None"), matrixClaims(nil), ""), "bad_algorithm"),
		invalid("alg missing", forge(hdr(nil), matrixClaims(nil), parts[2]), "bad_algorithm"),
		invalid("alg not a string", forge(hdr(256), matrixClaims(nil), parts[2]), "bad_algorithm"),
		invalid("alg unknown", forge(hdr("XS256"), matrixClaims(nil), parts[2]), "bad_algorithm"),
		invalid("tampered payload", parts[0]+"."+segment(matrixClaims(map[string]any{"sub": "admin"}))+"."+parts[2], "bad_signature"),
		invalid("signature of another token", parts[0]+"."+parts[1]+"."+strings.Split(sign(matrixClaims(map[string]any{"sub": "u2"})), ".")[2], "bad_signature"),
		invalid("empty signature", parts[0]+"."+parts[1]+".", "bad_signature"),
		invalid("zeroed signature", parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(make([]byte, len(parts[2])*3/4)), "bad_signature"),
		{"expired", sign(matrixClaims(map[string]any{"exp": now.Add(-time.Minute).Unix()})), msgTokenExpired, "expired"},
		{"expired long ago", sign(matrixClaims(map[string]any{"exp": 1})), msgTokenExpired, "expired"},
		invalid("not yet valid (nbf)", sign(matrixClaims(map[string]any{"nbf": now.Add(time.Hour).Unix()})), "not_yet_valid"),
		invalid("no exp", sign(matrixClaims(map[string]any{"exp": nil})), "missing_claim"),
		invalid("no sub", sign(matrixClaims(map[string]any{"sub": nil})), "missing_sub"),
		invalid("empty sub", sign(matrixClaims(map[string]any{"sub": ""})), "missing_sub"),
		invalid("sub not a string", sign(matrixClaims(map[string]any{"sub": 42})), "malformed"),
		invalid("exp not a number", sign(matrixClaims(map[string]any{"exp": "tomorrow"})), "malformed"),
		invalid("wrong iss", sign(matrixClaims(map[string]any{"iss": "https://evil.example"})), "wrong_issuer_or_audience"),
		invalid("wrong aud", sign(matrixClaims(map[string]any{"aud": "other"})), "wrong_issuer_or_audience"),
		invalid("aud list without ours", sign(matrixClaims(map[string]any{"aud": []string{"a", "b"}})), "wrong_issuer_or_audience"),
		invalid("no iss", sign(matrixClaims(map[string]any{"iss": nil})), "missing_claim"),
		invalid("no aud", sign(matrixClaims(map[string]any{"aud": nil})), "missing_claim"),
		invalid("header not base64", "!!!."+parts[1]+"."+parts[2], "malformed"),
		invalid("payload not base64", parts[0]+".*%*."+parts[2], "malformed"),
		invalid("signature not base64", parts[0]+"."+parts[1]+".$$$", "malformed"),
		invalid("padded base64", parts[0]+"=."+parts[1]+"."+parts[2], "malformed"),
		invalid("header not JSON", segment(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":`)))+"."+parts[1]+"."+parts[2], "malformed"),
		invalid("payload not JSON", parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte("sub=u1"))+"."+parts[2], "malformed"),
		invalid("payload a JSON array", parts[0]+"."+segment([]string{"u1"})+"."+parts[2], "malformed"),
		invalid("empty segments", "..", "malformed"),
		invalid("two segments", parts[0]+"."+parts[1], "malformed"),
		invalid("four segments", valid+"."+parts[2], "malformed"),
		invalid("thousands of dots", manyDots, "malformed"),
		invalid("thousands of dots after a valid token", valid+manyDots, "malformed"),
		invalid("100 KB", strings.Repeat("a", 100<<10), "token_too_large"),
		invalid("100 KB of dots", strings.Repeat(".", 100<<10), "token_too_large"),
		invalid("100 KB valid-looking", parts[0]+"."+strings.Repeat("A", 100<<10)+"."+parts[2], "token_too_large"),
	}
}

// runMatrix sends each token in `authenticate` (and in the CONNECT auth)
// and checks the auth_error message, the DISCONNECT, and the reason counted.
func runMatrix(t *testing.T, tn *testNode, cases []matrixCase, valid string) {
	t.Helper()
	counted := map[string]int{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			series := `hubnode_auth_failures_total{reason="` + tc.reason + `"}`
			before, _ := strconv.Atoi(metricValue(t, tn, series)) // "absent" is 0
			if _, err := tn.n.verifier.verify(tc.token); err == nil {
				t.Fatal("verify accepted the token")
			} else if ae := err.(*authError); ae.Message != tc.message || ae.Reason != tc.reason {
				t.Fatalf("verify: %q/%s, want %q/%s", ae.Message, ae.Reason, tc.message, tc.reason)
			}
			c := tn.connect(t)
			c.send(`427["authenticate",{"token":"` + tc.token + `"}]`)
			c.expect(`42["auth_error",{"message":"` + tc.message + `"}]`)
			c.expect(`437[{"ok":false,"error":"` + tc.message + `"}]`)
			c.expect(`41`)
			c.expectClosed()

			c = tn.dial(t, nil)
			c.send(`40{"token":"` + tc.token + `"}`)
			c.expect(`44{"message":"` + tc.message + `"}`)
			c.close()

			if got := metricValue(t, tn, series); got != strconv.Itoa(before+2) {
				t.Errorf("%s = %s, want %d (authenticate, CONNECT)", series, got, before+2)
			}
			counted[tc.reason] += 2
		})
	}
	// The node still serves, and nobody got in through a refused token.
	for _, user := range []string{"u2", "admin"} {
		if ok, _ := tn.n.Service().IsUserConnected(t.Context(), user); ok {
			t.Errorf("refused tokens connected user %s", user)
		}
	}
	tn.connect(t).authenticate(valid, "u1", "e@x")
	if len(counted) < 8 {
		t.Errorf("only %d reasons exercised", len(counted))
	}
}

func TestTokenMatrixSecret(t *testing.T) {
	k := testKeys()
	tn := newTestNode(t, func(o *Options) { o.Auth.Issuer, o.Auth.Audience = matrixIssuer, matrixAudience })
	sign := func(c jwt.MapClaims) string { return signClaims(t, testSecret, c) }
	cases := commonMatrix(t, nil, sign)
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
	}{
		{"HS512 with the secret", jwt.SigningMethodHS512, []byte(testSecret)},
		{"HS384 with the secret", jwt.SigningMethodHS384, []byte(testSecret)},
		{"RS256 (not configured)", jwt.SigningMethodRS256, k.rsa},
		{"PS256 (not configured)", jwt.SigningMethodPS256, k.rsa},
		{"ES256 (not configured)", jwt.SigningMethodES256, k.ec},
		{"EdDSA (not configured)", jwt.SigningMethodEdDSA, k.ed},
	} {
		cases = append(cases, matrixCase{tc.name, signKey(t, tc.method, tc.key, "", matrixClaims(nil)), msgInvalidToken, "bad_algorithm"})
	}
	cases = append(cases,
		matrixCase{"RS256 header, HMAC signature", forge(map[string]any{"alg": "RS256"}, matrixClaims(nil), ""), msgInvalidToken, "bad_algorithm"},
		matrixCase{"another secret", signClaims(t, "another-secret-0123456789abcdefghij", matrixClaims(nil)), msgInvalidToken, "bad_signature"},
	)
	runMatrix(t, tn, cases, sign(matrixClaims(nil)))
}

func TestTokenMatrixPublicKeys(t *testing.T) {
	k := testKeys()
	pemData := pemPublic(t, &k.rsa.PublicKey, &k.ec.PublicKey)
	tn := newTestNode(t, func(o *Options) {
		o.Auth = AuthOptions{PublicKeyFile: writeKeyFile(t, pemData), Issuer: matrixIssuer, Audience: matrixAudience}
	})
	rsaKid, ecKid := thumbprint(&k.rsa.PublicKey), thumbprint(&k.ec.PublicKey)
	sign := func(c jwt.MapClaims) string { return signKey(t, jwt.SigningMethodRS256, k.rsa, rsaKid, c) }
	cases := commonMatrix(t, map[string]any{"kid": rsaKid}, sign)
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	invalid := func(name, token, reason string) matrixCase { return matrixCase{name, token, msgInvalidToken, reason} }
	cases = append(cases,
		// Key confusion: an HMAC "secret" that every client can download.
		invalid("HS256 signed with the public key PEM (key confusion)", signKey(t, jwt.SigningMethodHS256, pemData, "", matrixClaims(nil)), "bad_algorithm"),
		invalid("HS256 signed with the public key PEM, with its kid", signKey(t, jwt.SigningMethodHS256, pemData, rsaKid, matrixClaims(nil)), "bad_algorithm"),
		invalid("HS256 signed with the public key DER", signKey(t, jwt.SigningMethodHS256, der, rsaKid, matrixClaims(nil)), "bad_algorithm"),
		invalid("HS512 signed with the public key PEM", signKey(t, jwt.SigningMethodHS512, pemData, "", matrixClaims(nil)), "bad_algorithm"),
		// Algorithms the keys are not bound to.
		invalid("RS512 with the RSA key", signKey(t, jwt.SigningMethodRS512, k.rsa, rsaKid, matrixClaims(nil)), "bad_algorithm"),
		invalid("PS256 with the RSA key", signKey(t, jwt.SigningMethodPS256, k.rsa, "", matrixClaims(nil)), "bad_algorithm"),
		invalid("ES256 under the RSA key's kid", signKey(t, jwt.SigningMethodES256, k.ec, rsaKid, matrixClaims(nil)), "bad_algorithm"),
		invalid("ES384 (no P-384 key)", signKey(t, jwt.SigningMethodES384, k.ec384, "", matrixClaims(nil)), "bad_algorithm"),
		invalid("EdDSA (no Ed25519 key)", signKey(t, jwt.SigningMethodEdDSA, k.ed, "", matrixClaims(nil)), "bad_algorithm"),
		// Signatures by keys that are not configured.
		invalid("another RSA key, no kid", signKey(t, jwt.SigningMethodRS256, k.rsa2, "", matrixClaims(nil)), "bad_signature"),
		invalid("another RSA key under the configured kid", signKey(t, jwt.SigningMethodRS256, k.rsa2, rsaKid, matrixClaims(nil)), "bad_signature"),
		invalid("another EC key under the configured kid", signKey(t, jwt.SigningMethodES256, k.ec2, ecKid, matrixClaims(nil)), "bad_signature"),
		invalid("unknown kid", signKey(t, jwt.SigningMethodRS256, k.rsa2, thumbprint(&k.rsa2.PublicKey), matrixClaims(nil)), "unknown_key"),
		invalid("kid not a string", forge(map[string]any{"alg": "RS256", "kid": 7}, matrixClaims(nil), "c2ln"), "unknown_key"),
		invalid("HS256 signed with the test secret", signClaims(t, testSecret, matrixClaims(nil)), "bad_algorithm"),
	)
	runMatrix(t, tn, cases, sign(matrixClaims(nil)))
	// Both configured keys work, with and without kid.
	tn.connect(t).authenticate(signKey(t, jwt.SigningMethodES256, k.ec, ecKid, matrixClaims(nil)), "u1", "e@x")
	tn.connect(t).authenticate(signKey(t, jwt.SigningMethodES256, k.ec, "", matrixClaims(nil)), "u1", "e@x")
	tn.connect(t).authenticate(signKey(t, jwt.SigningMethodRS256, k.rsa, "", matrixClaims(nil)), "u1", "e@x")
}

// TestOversizedTokensRefusedCheaply: a 100 KB token and one of thousands
// of dots are refused before any decoding: one allocation (the error), a
// few microseconds each, and promptly over a socket.
func TestOversizedTokensRefusedCheaply(t *testing.T) {
	tn := newTestNode(t, nil)
	for _, tc := range []struct{ name, token, reason string }{
		{"100 KB", strings.Repeat("a", 100<<10), "token_too_large"},
		{"100 KB of dots", strings.Repeat(".", 100<<10), "token_too_large"},
		{"thousands of dots", strings.Repeat("a.", 4000), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tn.n.verifier
			if allocs := testing.AllocsPerRun(100, func() { _, _ = v.verify(tc.token) }); allocs > 1 {
				t.Errorf("%v allocations per refusal, want at most 1 (no decoding)", allocs)
			}
			const n = 2000
			start := time.Now()
			for range n {
				if _, err := v.verify(tc.token); err == nil || err.(*authError).Reason != tc.reason {
					t.Fatalf("verify: %v, want %s", err, tc.reason)
				}
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("%d refusals took %v, want well under 500ms", n, d)
			}
			c := tn.connect(t)
			start = time.Now()
			c.send(`42["authenticate",{"token":"` + tc.token + `"}]`)
			c.expect(`42["auth_error",{"message":"Invalid token"}]`)
			c.expect(`41`)
			if d := time.Since(start); d > time.Second {
				t.Errorf("refused over the socket after %v", d)
			}
			c.expectClosed()
		})
	}
}
