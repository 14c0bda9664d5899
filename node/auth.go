package node

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// AuthOptions configure JWT verification.
type AuthOptions struct {
	// Secret is the HS256 key. Required.
	Secret []byte
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
}

func newVerifier(o AuthOptions) *verifier {
	popts := []jwt.ParserOption{
		// An explicit whitelist: "none" and asymmetric algorithms never reach the key.
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	return &verifier{opts: o, parser: jwt.NewParser(popts...)}
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
	var c claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.opts.Secret, nil })
	switch {
	case err == nil:
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
