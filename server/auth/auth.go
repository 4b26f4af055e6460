// Package auth is who may do what in ddstore: the cluster's certificate
// authority, node and client certificates, signed client tokens, and the
// principal a call acts as.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Errors callers can test for with errors.Is.
var (
	// ErrBadRole is a role name other than read, write or admin.
	ErrBadRole = errors.New("auth: unknown role")
	// ErrBadName is a cluster name, node ID, client name or prefix that
	// breaks the naming rules.
	ErrBadName = errors.New("auth: bad name")
	// ErrUnauthenticated is a credential that proves nothing: a token
	// missing, malformed, badly signed, expired or for another cluster, or a
	// certificate not trusted for the identity it claims.
	ErrUnauthenticated = errors.New("auth: unauthenticated")
	// ErrTokenExpired is a token past its expiry; it is also
	// ErrUnauthenticated.
	ErrTokenExpired = fmt.Errorf("%w: token expired", ErrUnauthenticated)
	// ErrBadCertificate is a certificate without exactly one well-formed
	// ddstore:// identity.
	ErrBadCertificate = errors.New("auth: certificate does not name a ddstore identity")
)

// Role is what a principal may do.
type Role int

// Roles, each allowing what the one before it does and more.
const (
	RoleNone  Role = iota // nothing
	RoleRead              // get, ls, stat, status (without internal addresses)
	RoleWrite             // read + put, rm inside its prefix
	RoleAdmin             // write + gc, repair, leave, replicate, status with internal addresses
)

// ParseRole reads "read", "write" or "admin", in any case.
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{RoleRead, RoleWrite, RoleAdmin} {
		if strings.EqualFold(s, r.String()) {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("%w %q (want read, write or admin)", ErrBadRole, s)
}

// String returns the role's name, as ParseRole reads it.
func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Kind is how a principal proved who it is.
type Kind int

// Kinds of principal.
const (
	KindAnonymous Kind = iota // no credentials
	KindClient                // a client certificate or token of this cluster
	KindNode                  // a node certificate of this cluster
	KindPeer                  // a node certificate of a trusted peer cluster
	KindLocal                 // insecure mode (no TLS configured): trusted as admin, loopback only
)

// String returns the kind's lower-case name.
func (k Kind) String() string {
	switch k {
	case KindAnonymous:
		return "anonymous"
	case KindClient:
		return "client"
	case KindNode:
		return "node"
	case KindPeer:
		return "peer"
	case KindLocal:
		return "local"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Principal is who a call acts as.
type Principal struct {
	Kind    Kind
	Cluster string // the cluster it belongs to (a peer's name for KindPeer)
	Name    string // node ID, client name, or token subject
	Role    Role
	Prefix  string // file names it may touch start with this; "" = all
	Via     string // "cert", "token", "insecure" or ""
}

// String is short and log-friendly: client:alice(write,prefix=a/,token),
// node:ddstore/node2, peer:B/node1, anonymous or local.
func (p Principal) String() string {
	switch p.Kind {
	case KindNode, KindPeer:
		return p.Kind.String() + ":" + p.Cluster + "/" + p.Name
	case KindClient:
		var b strings.Builder
		b.WriteString("client:" + p.Name + "(" + p.Role.String())
		if p.Prefix != "" {
			b.WriteString(",prefix=" + p.Prefix)
		}
		if p.Via != "" {
			b.WriteString("," + p.Via)
		}
		b.WriteString(")")
		return b.String()
	}
	return p.Kind.String()
}

// Covers reports whether the principal's prefix allows the file name.
func (p Principal) Covers(name string) bool { return strings.HasPrefix(name, p.Prefix) }

type ctxKey struct{}

// NewContext returns a context carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal NewContext put in ctx, if any.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// Limits of names.
const (
	maxCluster = 64
	maxName    = 128
	maxPrefix  = 1024
)

// checkCluster enforces the cluster naming rules: 1-64 of [A-Za-z0-9._-],
// usable as the host of a URI in a certificate (so no leading, trailing or
// doubled dot).
func checkCluster(s string) error {
	if s == "" || len(s) > maxCluster {
		return fmt.Errorf("%w: cluster name %q: want 1-%d characters", ErrBadName, s, maxCluster)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: cluster name %q: want only letters, digits, '.', '_' and '-'", ErrBadName, s)
		}
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return fmt.Errorf("%w: cluster name %q: dots must separate non-empty parts", ErrBadName, s)
	}
	return nil
}

// checkName enforces the rules for node IDs, client names and token
// subjects: non-empty, at most 128 bytes of UTF-8, no '/' and no control
// characters. what names the thing in errors.
func checkName(what, s string) error {
	switch {
	case s == "" || len(s) > maxName:
		return fmt.Errorf("%w: %s %q: want 1-%d bytes", ErrBadName, what, s, maxName)
	case strings.Contains(s, "/"):
		return fmt.Errorf("%w: %s %q: must not contain '/'", ErrBadName, what, s)
	}
	return checkText(what, s)
}

// checkPrefix enforces the rules for prefixes: at most 1024 bytes of UTF-8,
// no control characters.
func checkPrefix(s string) error {
	if len(s) > maxPrefix {
		return fmt.Errorf("%w: prefix is %d bytes, want at most %d", ErrBadName, len(s), maxPrefix)
	}
	return checkText("prefix", s)
}

func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q: not UTF-8", ErrBadName, what, s)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %s %q: must not contain control characters", ErrBadName, what, s)
	}
	return nil
}
