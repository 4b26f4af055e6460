package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token limits.
const (
	// MaxTokenLen is the longest token Verify reads.
	MaxTokenLen = 8 << 10
	// tokenLeeway is the clock skew allowed between issuer and verifier.
	tokenLeeway = 30 * time.Second
	// tokenIssuer is every token's iss claim.
	tokenIssuer = "ddstore"
)

// tokenClaims are a client token's claims: iss "ddstore", aud the cluster,
// sub the client, iat, exp, a random jti, and the role and prefix granted.
type tokenClaims struct {
	jwt.RegisteredClaims
	Role   string `json:"role"`
	Prefix string `json:"prefix,omitempty"`
}

// IssueToken signs a client token (a JWT, ES256) with the CA's key, granting
// subject the role within prefix in cluster for ttl (which must be > 0).
func (ca *CA) IssueToken(cluster, subject string, role Role, prefix string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("auth: token lifetime %v: want > 0", ttl)
	}
	return ca.issueToken(time.Now(), cluster, subject, role, prefix, ttl)
}

func (ca *CA) issueToken(now time.Time, cluster, subject string, role Role, prefix string, ttl time.Duration) (string, error) {
	if err := checkCluster(cluster); err != nil {
		return "", err
	}
	if err := checkName("token subject", subject); err != nil {
		return "", err
	}
	if err := checkPrefix(prefix); err != nil {
		return "", err
	}
	if _, err := ParseRole(role.String()); err != nil {
		return "", err
	}
	signer, err := ca.signer()
	if err != nil {
		return "", err
	}
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return "", errors.New("auth: tokens need an ECDSA P-256 CA key")
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("auth: token ID: %w", err)
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{cluster},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		Role:   role.String(),
		Prefix: prefix,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	if len(tok) > MaxTokenLen {
		return "", fmt.Errorf("auth: token is %d bytes, want at most %d", len(tok), MaxTokenLen)
	}
	return tok, nil
}

// TokenVerifier checks client tokens of one cluster against its CA
// certificate's public key.
type TokenVerifier struct {
	cluster string
	key     *ecdsa.PublicKey // nil if the CA's key is not ECDSA: every token fails
}

// NewTokenVerifier returns a verifier of cluster's tokens, signed by the key
// of caCert.
func NewTokenVerifier(cluster string, caCert *x509.Certificate) *TokenVerifier {
	v := &TokenVerifier{cluster: cluster}
	if caCert != nil {
		v.key, _ = caCert.PublicKey.(*ecdsa.PublicKey)
	}
	return v
}

// Verify checks a token and returns the client it speaks for (KindClient, Via
// "token"). It refuses any algorithm but ES256, a bad signature, another
// audience or issuer, an unknown role, and an expired token (ErrTokenExpired),
// allowing 30s of clock skew. Every error wraps ErrUnauthenticated.
func (v *TokenVerifier) Verify(token string) (Principal, error) {
	p, _, err := v.verify(token)
	return p, err
}

// verify is Verify that also returns when the token stops being accepted
// (its expiry plus the leeway).
func (v *TokenVerifier) verify(token string) (Principal, time.Time, error) {
	if len(token) > MaxTokenLen {
		return Principal{}, time.Time{}, fmt.Errorf("%w: token is %d bytes, more than %d", ErrUnauthenticated, len(token), MaxTokenLen)
	}
	if v.key == nil {
		return Principal{}, time.Time{}, fmt.Errorf("%w: the CA's key cannot verify ES256 tokens", ErrUnauthenticated)
	}
	if err := checkCluster(v.cluster); err != nil {
		return Principal{}, time.Time{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithAudience(v.cluster),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, time.Time{}, fmt.Errorf("%w (%v)", ErrTokenExpired, err)
	case err != nil:
		return Principal{}, time.Time{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	p := Principal{Kind: KindClient, Cluster: v.cluster, Name: claims.Subject, Prefix: claims.Prefix, Via: "token"}
	if p.Role, err = ParseRole(claims.Role); err != nil {
		return Principal{}, time.Time{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if err := checkName("token subject", p.Name); err != nil {
		return Principal{}, time.Time{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if err := checkPrefix(p.Prefix); err != nil {
		return Principal{}, time.Time{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return p, claims.ExpiresAt.Add(tokenLeeway), nil
}
