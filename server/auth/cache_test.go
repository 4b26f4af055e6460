package auth

import (
	"errors"
	"testing"
	"time"
)

func TestCacheTokens(t *testing.T) {
	ca := newTestCA(t, "A")
	v := NewTokenVerifier("A", ca.Cert)
	tok, err := ca.IssueToken("A", "alice", RoleWrite, "a/", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := Principal{Kind: KindClient, Cluster: "A", Name: "alice", Role: RoleWrite, Prefix: "a/", Via: "token"}
	now := time.Now()
	c := NewCache(2, time.Minute)
	c.now = func() time.Time { return now }

	tests := []struct {
		name  string
		at    time.Duration // clock of the cache, from now
		kept  bool          // the answer is remembered afterwards
		token string
		err   error
	}{
		{"first use verifies and keeps", 0, true, tok, nil},
		{"within the TTL", 59 * time.Second, true, tok, nil},
		// Past the TTL the token is checked again (and still good):
		{"past the TTL", 61 * time.Second, true, tok, nil},
		// Past the token's expiry (and leeway) by the cache's clock, nothing
		// is kept for it, even though it verifies by the real one.
		{"past the token's expiry", 2 * time.Hour, false, tok, nil},
		{"a bad token is refused every time", 0, false, tok[:len(tok)-4] + "AAAA", ErrUnauthenticated},
		{"and again", 0, false, tok[:len(tok)-4] + "AAAA", ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = time.Now().Add(tt.at)
			got, err := c.VerifyToken(v, tt.token)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("VerifyToken = %v, %v; want %v", got, err, tt.err)
				}
			} else if err != nil || got != want {
				t.Fatalf("VerifyToken = %+v, %v; want %+v", got, err, want)
			}
			if _, ok := c.get(tokenKey(tt.token)); ok != tt.kept {
				t.Fatalf("kept = %v, want %v", ok, tt.kept)
			}
		})
	}
}

func TestCacheBounded(t *testing.T) {
	c := NewCache(3, time.Minute)
	for i := range 10 {
		c.put(tokenKey(string(rune('a'+i))), Principal{Name: "x"}, time.Now().Add(time.Hour))
		if len(c.m) > 3 {
			t.Fatalf("%d entries after %d puts, want at most 3", len(c.m), i+1)
		}
	}
}
