package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParseRole(t *testing.T) {
	tests := []struct {
		in   string
		want Role
		err  error
	}{
		{"read", RoleRead, nil},
		{"WRITE", RoleWrite, nil},
		{"Admin", RoleAdmin, nil},
		{"none", RoleNone, ErrBadRole},
		{"", RoleNone, ErrBadRole},
		{"root", RoleNone, ErrBadRole},
	}
	for _, tt := range tests {
		got, err := ParseRole(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("ParseRole(%q) = %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil && got.String() != strings.ToLower(tt.in) {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

func TestPrincipalString(t *testing.T) {
	tests := []struct {
		p    Principal
		want string
	}{
		{Principal{Kind: KindClient, Cluster: "A", Name: "alice", Role: RoleWrite, Prefix: "a/", Via: "token"}, "client:alice(write,prefix=a/,token)"},
		{Principal{Kind: KindClient, Name: "bob", Role: RoleRead, Via: "cert"}, "client:bob(read,cert)"},
		{Principal{Kind: KindNode, Cluster: "ddstore", Name: "node2", Role: RoleAdmin}, "node:ddstore/node2"},
		{Principal{Kind: KindPeer, Cluster: "B", Name: "node1"}, "peer:B/node1"},
		{Principal{}, "anonymous"},
		{Principal{Kind: KindLocal, Role: RoleAdmin, Via: "insecure"}, "local"},
		{Principal{Kind: Kind(9)}, "Kind(9)"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		prefix, name string
		want         bool
	}{
		{"", "anything", true},
		{"a/", "a/b", true},
		{"a/", "a", false},
		{"a/", "b/a/", false},
	}
	for _, tt := range tests {
		if got := (Principal{Prefix: tt.prefix}).Covers(tt.name); got != tt.want {
			t.Errorf("prefix %q covers %q = %v, want %v", tt.prefix, tt.name, got, tt.want)
		}
	}
}

func TestContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("empty context has a principal")
	}
	p := Principal{Kind: KindClient, Name: "alice", Role: RoleRead}
	got, ok := FromContext(NewContext(context.Background(), p))
	if !ok || got != p {
		t.Fatalf("FromContext = %v, %v; want %v", got, ok, p)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		what string
		fn   func(string) error
		in   string
		ok   bool
	}{
		{"cluster", checkCluster, "ddstore", true},
		{"cluster", checkCluster, "eu-west_1.prod", true},
		{"cluster", checkCluster, "", false},
		{"cluster", checkCluster, "a b", false},
		{"cluster", checkCluster, "a/b", false},
		{"cluster", checkCluster, ".a", false},
		{"cluster", checkCluster, "a..b", false},
		{"cluster", checkCluster, string(make([]byte, 65)), false},
		{"name", func(s string) error { return checkName("name", s) }, "node 1 (ü)", true},
		{"name", func(s string) error { return checkName("name", s) }, "", false},
		{"name", func(s string) error { return checkName("name", s) }, "a/b", false},
		{"name", func(s string) error { return checkName("name", s) }, "a\nb", false},
		{"name", func(s string) error { return checkName("name", s) }, "\xff", false},
		{"prefix", checkPrefix, "", true},
		{"prefix", checkPrefix, "weather/2026 ?&=%#/", true},
		{"prefix", checkPrefix, "a\x00", false},
	}
	for _, tt := range tests {
		err := tt.fn(tt.in)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrBadName)) {
			t.Errorf("%s %q: %v, want ok=%v", tt.what, tt.in, err, tt.ok)
		}
	}
}

func TestErrTokenExpiredIsUnauthenticated(t *testing.T) {
	if !errors.Is(ErrTokenExpired, ErrUnauthenticated) {
		t.Fatal("ErrTokenExpired is not ErrUnauthenticated")
	}
}
