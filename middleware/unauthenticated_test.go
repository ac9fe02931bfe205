package middleware_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// perKey is a token bucket of n per key that never refills.
type perKey struct {
	mu   sync.Mutex
	n    int
	used map[string]int
}

func (l *perKey) Allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used == nil {
		l.used = map[string]int{}
	}
	if l.used[key] >= l.n {
		return false, 3 * time.Second
	}
	l.used[key]++
	return true, 0
}

// noDB is a database that is down.
type noDB struct{}

func (noDB) BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error) {
	return nil, errors.New("database down")
}

// Security item 4: refusals before authentication are limited per client
// address, in both forms: beyond the bucket they answer 429 with
// Retry-After and reach Throttled, not Audit; the audited ones carry the
// client address; other addresses keep their own bucket, and a valid token
// from a throttled address still passes.
func TestRefusalsBeforeAuthenticationAreLimitedPerClient(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Rules: []mapping.Rule{{RealmRole: "dev", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var audited, throttled []middleware.Event
	newGate := func() *middleware.Middleware {
		audited, throttled = nil, nil
		return &middleware.Middleware{
			Auth:            tokens{e: e, facts: map[string]mapping.Facts{"good": {Subject: "dana", RealmRoles: []string{"dev"}}}},
			Decider:         func() middleware.Decider { return e },
			DB:              noDB{},
			Unauthenticated: &perKey{n: 3},
			Audit:           func(_ context.Context, ev middleware.Event) { mu.Lock(); audited = append(audited, ev); mu.Unlock() },
			Throttled: func(_ context.Context, ev middleware.Event) {
				mu.Lock()
				throttled = append(throttled, ev)
				mu.Unlock()
			},
		}
	}
	type answer struct {
		code  int
		retry string
	}
	check := func(t *testing.T, name string, do func(remote, forwarded, token string) answer, flooder, other string) {
		t.Helper()
		var got []int
		for i := range 10 {
			token := ""
			if i%2 == 1 {
				token = "forged"
			}
			a := do("10.0.0.1:1000", flooder, token)
			got = append(got, a.code)
			if a.code == http.StatusTooManyRequests && a.retry == "" {
				t.Errorf("%s: 429 without Retry-After", name)
			}
		}
		want := []int{401, 401, 401, 429, 429, 429, 429, 429, 429, 429}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: answers %v, want %v", name, got, want)
			}
		}
		if len(audited) != 3 || len(throttled) != 7 {
			t.Errorf("%s: %d audited, %d throttled; want 3 and 7", name, len(audited), len(throttled))
		}
		for _, ev := range append(audited, throttled...) {
			if ev.Client != "192.0.2.9" {
				t.Errorf("%s: event client %q, want 192.0.2.9", name, ev.Client)
			}
		}
		if a := do("10.0.0.1:1000", other, ""); a.code != http.StatusUnauthorized {
			t.Errorf("%s: another client got %d, want 401", name, a.code)
		}
		if a := do("10.0.0.1:1000", flooder, "good"); a.code >= 400 && a.code != http.StatusServiceUnavailable {
			// No database here: a passing token reaches the transaction (503), not 401 or 429.
			t.Errorf("%s: a valid token from the throttled address got %d", name, a.code)
		}
	}

	t.Run("net/http", func(t *testing.T) {
		g := newGate()
		g.ClientAddr = func(r *http.Request) string {
			if f := r.Header.Get("X-Forwarded-For"); f != "" {
				return f
			}
			return r.RemoteAddr
		}
		h := g.HTTP("things.list", nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		check(t, "net/http", func(remote, forwarded, token string) answer {
			req := httptest.NewRequest("GET", "/things", nil)
			req.RemoteAddr = remote
			req.Header.Set("X-Forwarded-For", forwarded)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return answer{rec.Code, rec.Header().Get("Retry-After")}
		}, "192.0.2.9", "192.0.2.10")
	})

	t.Run("gin behind a trusted proxy", func(t *testing.T) {
		gin.SetMode(gin.ReleaseMode)
		g := newGate()
		r := gin.New()
		if err := r.SetTrustedProxies([]string{"10.0.0.0/8"}); err != nil {
			t.Fatal(err)
		}
		r.GET("/things", g.Require("things.list"), func(c *gin.Context) { c.Status(200) })
		check(t, "gin", func(remote, forwarded, token string) answer {
			req := httptest.NewRequest("GET", "/things", nil)
			req.RemoteAddr = remote
			req.Header.Set("X-Forwarded-For", forwarded)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			return answer{rec.Code, rec.Header().Get("Retry-After")}
		}, "192.0.2.9", "192.0.2.10")
	})
}
