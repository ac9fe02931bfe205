// Package ratelimit keeps a token bucket per key (subject, client address)
// with golang.org/x/time/rate, evicting idle keys so memory stays bounded.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a set of buckets with one rate.
type Limiter struct {
	Rate  float64 // tokens per second; 0 disables
	Burst int
	Idle  time.Duration // evict keys unused this long (default 10m)
	// MaxKeys bounds the keys held (0: unbounded). When it is reached, keys
	// whose bucket has refilled are evicted (losslessly: a full bucket is a
	// new one); if none has, new keys share one overflow bucket until room
	// frees, so a caller with endless addresses cannot grow the table.
	MaxKeys int

	mu       sync.Mutex
	buckets  map[string]*entry
	swept    time.Time
	full     time.Time // last sweep for room at MaxKeys
	overflow *entry    // shared by new keys while the table is full
}

type entry struct {
	l    *rate.Limiter
	seen time.Time
}

// Allow takes a token for key; when none is left it says how long to wait.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil || l.Rate <= 0 {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	if l.buckets == nil {
		l.buckets = map[string]*entry{}
	}
	idle := l.Idle
	if idle <= 0 {
		idle = 10 * time.Minute
	}
	if now.Sub(l.swept) > idle {
		for k, e := range l.buckets {
			if now.Sub(e.seen) > idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	e, ok := l.buckets[key]
	if !ok && l.MaxKeys > 0 && len(l.buckets) >= l.MaxKeys {
		e = l.room(now)
	}
	if e == nil {
		e = &entry{l: rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))}
		l.buckets[key] = e
	}
	e.seen = now
	l.mu.Unlock()
	r := e.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// room is called with the table at MaxKeys: it evicts the keys whose
// bucket has refilled, at most once per refill time, and returns nil when
// that made room, or else the overflow bucket new keys share meanwhile.
func (l *Limiter) room(now time.Time) *entry {
	refill := time.Duration(float64(max(l.Burst, 1)) / l.Rate * float64(time.Second))
	if now.Sub(l.full) >= refill {
		for k, e := range l.buckets {
			if now.Sub(e.seen) >= refill {
				delete(l.buckets, k)
			}
		}
		l.full = now
		if len(l.buckets) < l.MaxKeys {
			return nil
		}
	}
	if l.overflow == nil {
		l.overflow = &entry{l: rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))}
	}
	return l.overflow
}

// Len is the number of keys held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// AddressKey is the bucket key of a client address: an IPv4 address as it
// is, an IPv6 address by its /64 (what one subscriber is usually given),
// so a client cannot draw fresh buckets by walking its own prefix.
// Anything else is kept as given.
func AddressKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// ByAddress is a Limiter keyed by client address through AddressKey.
type ByAddress struct{ L *Limiter }

// Allow takes a token for the client address addr.
func (b ByAddress) Allow(addr string) (bool, time.Duration) { return b.L.Allow(AddressKey(addr)) }
