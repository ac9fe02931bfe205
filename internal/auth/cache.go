package auth

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
	"unsafe"
)

// TokenVerifier is what the cache decorates.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*Token, error)
}

// Cached remembers verified tokens by a SHA-256 of the token, so a hot token
// costs one hash and one map lookup. A token is answered from the cache
// until its Until (expiry plus leeway), the same instant the verifier itself
// stops accepting it, and refused from the cache after that: a client that
// keeps sending its expired token costs a lookup, not a signature check.
// Expired entries are the first evicted. Refusals of tokens that never
// verified are not cached: a forged token costs the attacker a full
// verification each time and takes no room from real ones.
type Cached struct {
	Next TokenVerifier
	Size int
	Now  func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]*Token
}

// Verify implements TokenVerifier.
func (c *Cached) Verify(ctx context.Context, raw string) (*Token, error) {
	if c.Size <= 0 {
		return c.Next.Verify(ctx, raw)
	}
	key := tokenKey(raw)
	now := c.now()
	c.mu.Lock()
	t, ok := c.entries[key]
	c.mu.Unlock()
	switch {
	case ok && !now.After(t.Until):
		return t, nil
	case ok && !t.Until.Before(t.Expiry):
		return nil, refuse(Expired, "expired at %s", t.Expiry.UTC().Format(time.RFC3339))
	}
	// Not cached, or cached until a freshness bound short of its expiry
	// (Remote's TTL): verify it again.
	t, err := c.Next.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	if t.Hash != key {
		// The verifier may share its token between callers: copy, never write.
		cp := *t
		cp.Hash = key
		t = &cp
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[[32]byte]*Token, c.Size)
	}
	if len(c.entries) >= c.Size {
		c.evict(now)
	}
	c.entries[key] = t
	c.mu.Unlock()
	return t, nil
}

// evict makes room for a tenth of the cache, expired entries first, then
// arbitrary ones: bounded memory matters more than a perfect hit rate.
// Called with c.mu held.
func (c *Cached) evict(now time.Time) {
	target := c.Size * 9 / 10
	for k, e := range c.entries {
		if now.After(e.Until) {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) <= target {
			return
		}
		delete(c.entries, k)
	}
}

func (c *Cached) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// tokenKey is the caches' key for a token: its SHA-256, so no cache holds a
// usable token. The token is hashed in place rather than copied to a []byte
// first: a 1-2 KB allocation on every decision otherwise.
func tokenKey(raw string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}
