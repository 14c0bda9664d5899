package node

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// Messages of auth_error and CONNECT_ERROR. Clients may match on them, so
// they are part of the contract (README, "Authentication").
const (
	msgTokenRequired = "Token required"
	msgInvalidToken  = "Invalid token"
	msgTokenExpired  = "Token expired"
	msgAuthTimeout   = "Authentication timeout"
	msgOtherUser     = "Already authenticated as another user"
)

// maxTokenBytes bounds what the verifier parses; real access tokens are far smaller.
const maxTokenBytes = 8 << 10

// AuthOptions configure JWT verification. Exactly one of Secret,
// PublicKeyFile and JWKSURL must be set.
type AuthOptions struct {
	// Secret is the HS256 key.
	Secret []byte
	// PublicKeyFile is a PEM file of one or more public keys (RSA: RS256,
	// ECDSA P-256/P-384/P-521: ES256/ES384/ES512, Ed25519: EdDSA). A token's
	// kid selects the key whose RFC 7638 thumbprint it is; a token without
	// kid is tried against each key of its algorithm. The file is re-read
	// when its modification time or size changes, checked at most every
	// 10 s as tokens arrive; an unreadable new version keeps the old keys.
	PublicKeyFile string
	// JWKSURL is a JWK Set (http or https) fetched at start and refreshed
	// after JWKSRefresh, or on a token with an unknown kid at most once per
	// JWKSMinRefresh. A failed fetch keeps the last good set.
	JWKSURL string
	// JWKSRefresh is the age after which the JWK Set is refetched (in the
	// background, on the next token). Default 10m.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the least time between two fetches caused by
	// unknown kids, so forged kids cannot hammer the endpoint. Default 30s.
	JWKSMinRefresh time.Duration
	// JWKSClient fetches the JWK Set. Default: a client without keep-alive
	// (a fetch every few minutes reuses nothing); every fetch is bounded by 5 s.
	JWKSClient *http.Client
	// ExpiryGrace is how long an authenticated socket may stay connected
	// after its token's exp (plus Leeway) without refreshing it by emitting
	// authenticate again; then it gets auth_error "Token expired" and a
	// DISCONNECT. Zero means none (hubnode's JWT_EXPIRY_GRACE defaults to 30s).
	ExpiryGrace time.Duration
	// Issuer, when set, must equal the token's iss claim.
	Issuer string
	// Audience, when set, must be among the token's aud claim.
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat. Zero means none.
	Leeway time.Duration
}

// identity is what a verified token says about its bearer.
type identity struct {
	UserID  string
	Email   string
	Expires time.Time
}

type claims struct {
	Email string `json:"email"`
	jwt.RegisteredClaims
}

// verifier checks access tokens. It is safe for concurrent use.
type verifier struct {
	opts   AuthOptions
	parser *jwt.Parser
	// methods is the algorithm whitelist: HS256 with a secret, the
	// asymmetric algorithms with public keys, never both.
	methods []string
	// keys supplies the public keys; nil with a secret.
	keys keySource
}

// validate checks that exactly one key source is configured.
func (o AuthOptions) validate() error {
	n := 0
	for _, set := range []bool{len(o.Secret) > 0, o.PublicKeyFile != "", o.JWKSURL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("node: set exactly one of Auth.Secret, Auth.PublicKeyFile and Auth.JWKSURL")
	}
	return nil
}

// newVerifier loads the keys: a bad PublicKeyFile is an error, an
// unreachable JWKSURL is logged and retried as tokens arrive.
func newVerifier(o AuthOptions, log *zap.Logger) (*verifier, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	v := &verifier{opts: o, methods: []string{jwt.SigningMethodHS256.Alg()}}
	switch {
	case o.PublicKeyFile != "":
		fk, err := newFileKeys(o.PublicKeyFile, log)
		if err != nil {
			return nil, err
		}
		v.keys, v.methods = fk, asymmetricMethods
	case o.JWKSURL != "":
		v.keys, v.methods = newJWKSKeys(o, log), asymmetricMethods
	}
	popts := []jwt.ParserOption{
		// An explicit whitelist: "none", and HS* when the keys are public,
		// never reach the key.
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

// authError is a refused token: Message goes to the client, Reason to metrics and logs.
type authError struct {
	Message string
	Reason  string
}

func (e *authError) Error() string { return e.Reason }

// verify returns the identity in token, or an *authError.
func (v *verifier) verify(token string) (identity, error) {
	if token == "" {
		return identity{}, &authError{msgTokenRequired, "missing_token"}
	}
	if len(token) > maxTokenBytes {
		return identity{}, &authError{msgInvalidToken, "token_too_large"}
	}
	if strings.Count(token, ".") != 2 { // before any decoding, however many dots
		return identity{}, &authError{msgInvalidToken, "malformed"}
	}
	var c claims
	tok, err := v.parser.ParseWithClaims(token, &c, v.key)
	switch {
	case err == nil:
	case tok != nil && tok.Method != nil && !slices.Contains(v.methods, tok.Method.Alg()),
		errors.Is(err, errKeyAlgorithm):
		return identity{}, &authError{msgInvalidToken, "bad_algorithm"}
	case errors.Is(err, errUnknownKey):
		return identity{}, &authError{msgInvalidToken, "unknown_key"}
	case errors.Is(err, jwt.ErrTokenExpired):
		return identity{}, &authError{msgTokenExpired, "expired"}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return identity{}, &authError{msgInvalidToken, "bad_signature"}
	case errors.Is(err, jwt.ErrTokenMalformed):
		return identity{}, &authError{msgInvalidToken, "malformed"}
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return identity{}, &authError{msgInvalidToken, "bad_algorithm"}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return identity{}, &authError{msgInvalidToken, "missing_claim"}
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return identity{}, &authError{msgInvalidToken, "not_yet_valid"}
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return identity{}, &authError{msgInvalidToken, "wrong_issuer_or_audience"}
	default:
		return identity{}, &authError{msgInvalidToken, "invalid"}
	}
	if c.Subject == "" {
		return identity{}, &authError{msgInvalidToken, "missing_sub"}
	}
	return identity{UserID: c.Subject, Email: c.Email, Expires: c.ExpiresAt.Time}, nil
}

// SignToken issues an HS256 access token for userID, as the hub's auth
// service would; hubnode uses it for its development mode and its tests.
func SignToken(secret []byte, userID, email string, ttl time.Duration) (string, error) {
	now := time.Now()
	c := claims{Email: email, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
