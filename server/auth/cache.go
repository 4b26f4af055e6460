package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"sync"
	"time"
)

// Cache remembers, for a short while, the principals of the certificate
// chains and tokens that verified, so that every call on a connection does
// not pay an ECDSA verification again: a chain check or an ES256 token
// check costs ~0.1–0.5 ms of CPU, as much as the rest of a small file's
// put on the node. Only successes are kept, each until the earlier of TTL
// from now and the moment the certificate or token expires; a Trust and a
// TokenVerifier never change once made, so nothing else can make a kept
// answer wrong. It is safe for concurrent use.
type Cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]cached
}

type cached struct {
	p     Principal
	until time.Time
}

// NewCache returns a cache keeping at most max answers, each at most ttl.
func NewCache(max int, ttl time.Duration) *Cache {
	return &Cache{ttl: ttl, max: max, now: time.Now, m: make(map[[32]byte]cached)}
}

// Identify is t.Identify(cs), remembered.
func (c *Cache) Identify(t *Trust, cs tls.ConnectionState) (Principal, error) {
	if len(cs.PeerCertificates) == 0 {
		return t.Identify(cs)
	}
	h := sha256.New()
	h.Write([]byte("chain"))
	for _, cert := range cs.PeerCertificates {
		h.Write([]byte{0})
		h.Write(cert.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	if p, ok := c.get(key); ok {
		return p, nil
	}
	p, err := t.Identify(cs)
	if err != nil {
		return p, err
	}
	until := cs.PeerCertificates[0].NotAfter
	for _, cert := range cs.PeerCertificates[1:] {
		if cert.NotAfter.Before(until) {
			until = cert.NotAfter
		}
	}
	c.put(key, p, until)
	return p, nil
}

// VerifyToken is v.Verify(token), remembered.
func (c *Cache) VerifyToken(v *TokenVerifier, token string) (Principal, error) {
	key := tokenKey(token)
	if p, ok := c.get(key); ok {
		return p, nil
	}
	p, until, err := v.verify(token)
	if err != nil {
		return p, err
	}
	c.put(key, p, until)
	return p, nil
}

func (c *Cache) get(key [32]byte) (Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return Principal{}, false
	}
	if !c.now().Before(e.until) {
		delete(c.m, key)
		return Principal{}, false
	}
	return e.p, true
}

func (c *Cache) put(key [32]byte, p Principal, expires time.Time) {
	now := c.now()
	until := now.Add(c.ttl)
	if expires.Before(until) {
		until = expires
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[key] = cached{p: p, until: until}
}

func tokenKey(token string) [32]byte {
	return sha256.Sum256(append([]byte("token\x00"), token...))
}
