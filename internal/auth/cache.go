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
// A token whose signing key has left the verifier's JWKS (rotated out) is
// no longer answered from the cache: it goes to the verifier again, which
// refuses it, so a rotation ends cached tokens at the JWKS refresh that
// learns of it, not at their exp. Expired entries are the first evicted.
// Refusals of tokens that never verified are not cached: a forged token
// costs the attacker a full verification each time and takes no room from
// real ones.
type Cached struct {
	Next TokenVerifier
	Size int
	Now  func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]cacheEntry
}

type cacheEntry struct {
	tok *Token
	gen uint64 // the key set generation at which tok's key was last seen in the JWKS
}

// Verify implements TokenVerifier.
func (c *Cached) Verify(ctx context.Context, raw string) (*Token, error) {
	if c.Size <= 0 {
		return c.Next.Verify(ctx, raw)
	}
	key := tokenKey(raw)
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	t := e.tok
	if ok && !now.After(t.Until) {
		held, gen := t.keyHeld(e.gen)
		if held {
			if gen != e.gen {
				c.replace(key, t, cacheEntry{tok: t, gen: gen})
			}
			return t, nil
		}
		// Its key was rotated out: forget it, and let the verifier refuse it.
		c.replace(key, t, cacheEntry{})
		ok = false
	}
	if ok && !t.Until.Before(t.Expiry) {
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
		c.entries = make(map[[32]byte]cacheEntry, c.Size)
	}
	if len(c.entries) >= c.Size {
		c.evict(now)
	}
	c.entries[key] = cacheEntry{tok: t, gen: t.keyGen}
	c.mu.Unlock()
	return t, nil
}

// replace sets the entry of key to e (deletes it when e is empty), unless
// the entry no longer holds was.
func (c *Cached) replace(key [32]byte, was *Token, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cur, ok := c.entries[key]; {
	case !ok || cur.tok != was:
	case e.tok == nil:
		delete(c.entries, key)
	default:
		c.entries[key] = e
	}
}

// evict makes room for a tenth of the cache, expired entries first, then
// arbitrary ones: bounded memory matters more than a perfect hit rate.
// Called with c.mu held.
func (c *Cached) evict(now time.Time) {
	target := c.Size * 9 / 10
	for k, e := range c.entries {
		if now.After(e.tok.Until) {
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
