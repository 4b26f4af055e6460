package auth

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenValid(t *testing.T) {
	ca := newTestCA(t, "A")
	tests := []struct {
		subject string
		role    Role
		prefix  string
	}{
		{"client", RoleRead, ""},
		{"alice", RoleWrite, "weather/"},
		{"ops team", RoleAdmin, "a b/?&=%ü"},
	}
	v := NewTokenVerifier("A", ca.Cert)
	for _, tt := range tests {
		tok, err := ca.IssueToken("A", tt.subject, tt.role, tt.prefix, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(tok)
		want := Principal{Kind: KindClient, Cluster: "A", Name: tt.subject, Role: tt.role, Prefix: tt.prefix, Via: "token"}
		if err != nil || got != want {
			t.Errorf("Verify = %+v, %v; want %+v", got, err, want)
		}
	}
}

func TestTokenIssueRefuses(t *testing.T) {
	ca := newTestCA(t, "A")
	tests := []struct {
		name    string
		cluster string
		subject string
		role    Role
		ttl     time.Duration
		err     error
	}{
		{"no lifetime", "A", "c", RoleRead, 0, nil},
		{"negative lifetime", "A", "c", RoleRead, -time.Hour, nil},
		{"no role", "A", "c", RoleNone, time.Hour, ErrBadRole},
		{"bad cluster", "", "c", RoleRead, time.Hour, ErrBadName},
		{"bad subject", "A", "a/b", RoleRead, time.Hour, ErrBadName},
	}
	for _, tt := range tests {
		_, err := ca.IssueToken(tt.cluster, tt.subject, tt.role, "", tt.ttl)
		if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) {
			t.Errorf("%s: %v, want an error (%v)", tt.name, err, tt.err)
		}
	}
	if _, err := (&CA{Cert: ca.Cert}).IssueToken("A", "c", RoleRead, "", time.Hour); err == nil {
		t.Error("a CA without its key issued a token")
	}
}

// sign signs claims with method and key, for tokens IssueToken would not make.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenRefused(t *testing.T) {
	ca := newTestCA(t, "A")
	other := newTestCA(t, "A")
	v := NewTokenVerifier("A", ca.Cert)
	now := time.Now()
	claims := func(mod func(*tokenClaims)) tokenClaims {
		c := tokenClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: "ddstore", Subject: "c", Audience: jwt.ClaimStrings{"A"},
				IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), ID: "x",
			},
			Role: "read",
		}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	pub, err := x509.MarshalPKIXPublicKey(ca.Cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	mustIssue := func(tok string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name  string
		token string
		err   error
	}{
		{"sanity: valid", sign(t, jwt.SigningMethodES256, ca.Key, claims(nil)), nil},
		{"expired", mustIssue(ca.issueToken(now.Add(-2*time.Hour), "A", "c", RoleRead, "", time.Hour)), ErrTokenExpired},
		{"expired within leeway", mustIssue(ca.issueToken(now.Add(-time.Hour-10*time.Second), "A", "c", RoleRead, "", time.Hour)), nil},
		{"issued in the future", mustIssue(ca.issueToken(now.Add(time.Hour), "A", "c", RoleRead, "", time.Hour)), ErrUnauthenticated},
		{"signed by another CA", mustIssue(other.IssueToken("A", "c", RoleRead, "", time.Hour)), ErrUnauthenticated},
		{"another audience", mustIssue(ca.IssueToken("B", "c", RoleRead, "", time.Hour)), ErrUnauthenticated},
		{"another issuer", sign(t, jwt.SigningMethodES256, ca.Key, claims(func(c *tokenClaims) { c.Issuer = "evil" })), ErrUnauthenticated},
		{"no expiry", sign(t, jwt.SigningMethodES256, ca.Key, claims(func(c *tokenClaims) { c.ExpiresAt = nil })), ErrUnauthenticated},
		{"unknown role", sign(t, jwt.SigningMethodES256, ca.Key, claims(func(c *tokenClaims) { c.Role = "root" })), ErrBadRole},
		{"bad subject", sign(t, jwt.SigningMethodES256, ca.Key, claims(func(c *tokenClaims) { c.Subject = "" })), ErrBadName},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), ErrUnauthenticated},
		{"HS256 keyed with the public key", sign(t, jwt.SigningMethodHS256, pub, claims(nil)), ErrUnauthenticated},
		{"HS256 keyed with the PEM certificate", sign(t, jwt.SigningMethodHS256, ca.CertPEM, claims(nil)), ErrUnauthenticated},
		{"ES384", "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9." + strings.SplitN(sign(t, jwt.SigningMethodES256, ca.Key, claims(nil)), ".", 2)[1], ErrUnauthenticated},
		{"empty", "", ErrUnauthenticated},
		{"garbage", "not.a.token", ErrUnauthenticated},
		{"too long", strings.Repeat("a", MaxTokenLen+1), ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := v.Verify(tt.token)
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.err != nil && (!errors.Is(err, tt.err) || !errors.Is(err, ErrUnauthenticated)):
				t.Fatalf("Verify = %v, %v; want %v (and ErrUnauthenticated)", p, err, tt.err)
			}
		})
	}
	if _, err := NewTokenVerifier("A", nil).Verify(sign(t, jwt.SigningMethodES256, ca.Key, claims(nil))); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a verifier without a CA: %v", err)
	}
}
