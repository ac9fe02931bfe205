// Package ratelimit keeps a token bucket per key (subject, client address)
// with golang.org/x/time/rate, evicting idle keys so memory stays bounded.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a set of buckets with one rate.
type Limiter struct {
	Rate  float64 // tokens per second; 0 disables
	Burst int
	Idle  time.Duration // evict keys unused this long (default 10m)

	mu      sync.Mutex
	buckets map[string]*entry
	swept   time.Time
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
	if !ok {
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
