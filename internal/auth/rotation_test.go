package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keybridge/keybridge/internal/auth"
)

// rotatingJWKS serves a key set the test replaces, counting fetches.
type rotatingJWKS struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]*rsa.PrivateKey
	served  []string
	fetches atomic.Int64
}

func newRotatingJWKS(t *testing.T, kids ...string) *rotatingJWKS {
	t.Helper()
	j := &rotatingJWKS{keys: map[string]*rsa.PrivateKey{}}
	for _, kid := range kids {
		j.keys[kid] = newKey(t)
	}
	j.served = kids
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		var set jose.JSONWebKeySet
		for _, kid := range j.served {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &j.keys[kid].PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
		}
		j.mu.Unlock()
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.Close)
	return j
}

func newKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// serve makes the JWKS publish exactly kids (new ones get a fresh key).
func (j *rotatingJWKS) serve(t *testing.T, kids ...string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, kid := range kids {
		if j.keys[kid] == nil {
			j.keys[kid] = newKey(t)
		}
	}
	j.served = kids
}

// sign makes a token of kid's key with the base claims plus extra (a nil
// value removes a claim).
func (j *rotatingJWKS) sign(t *testing.T, kid string, now time.Time, extra map[string]any) string {
	t.Helper()
	j.mu.Lock()
	key := j.keys[kid]
	j.mu.Unlock()
	claims := map[string]any{"iss": "https://kc.test/realms/r", "sub": "u", "aud": "keybridge",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// A token answered from the cache stops being answered once the key that
// signed it has left the JWKS: the refresh that learns of the rotation
// (here, one caused by a token of the new key) ends it, not the token's exp.
func TestCachedTokenStopsAnsweringWhenItsKeyLeavesTheJWKS(t *testing.T) {
	jwks := newRotatingJWKS(t, "k1")
	now := &atomic.Int64{}
	v := verifierAt(t, jwks.URL, now)
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	c := &auth.Cached{Next: v, Size: 100, Now: clock}
	ctx := context.Background()
	old := jwks.sign(t, "k1", clock(), nil)
	if _, err := c.Verify(ctx, old); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
	if _, err := c.Verify(ctx, old); err != nil {
		t.Fatalf("cached token: %v", err)
	}

	jwks.serve(t, "k2") // Keycloak rotated: k1 is gone
	now.Add(int64(2 * time.Minute))
	if _, err := c.Verify(ctx, jwks.sign(t, "k2", clock(), nil)); err != nil {
		t.Fatalf("token of the new key (its unknown kid refreshes the JWKS): %v", err)
	}
	if _, err := c.Verify(ctx, old); auth.ReasonOf(err) != auth.UnknownKid {
		t.Fatalf("cached token of a key no longer in the JWKS: %v, want refused as %s", err, auth.UnknownKid)
	}

	// A key that stays published keeps its cached tokens across refreshes.
	jwks.serve(t, "k2", "k3")
	k2 := jwks.sign(t, "k2", clock(), nil)
	if _, err := c.Verify(ctx, k2); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(2 * time.Minute))
	if _, err := c.Verify(ctx, jwks.sign(t, "k3", clock(), nil)); err != nil {
		t.Fatalf("token of k3: %v", err)
	}
	if _, err := c.Verify(ctx, k2); err != nil {
		t.Fatalf("cached token of a key still in the JWKS: %v", err)
	}
}

// The JWKS is refetched every MaxKeyAge even when every request is a
// cache hit and no token reaches the verifier: a rotated-out key's cached
// tokens stop within MaxKeyAge and a fetch.
func TestJWKSIsRefetchedEveryMaxKeyAgeWhileTheCacheAnswers(t *testing.T) {
	jwks := newRotatingJWKS(t, "k1")
	v, err := auth.NewVerifier(context.Background(), auth.Options{Issuer: "https://kc.test/realms/r", Audiences: []string{"keybridge"},
		Algorithms: []string{"RS256"}, RefreshInterval: time.Minute, MaxKeyAge: 100 * time.Millisecond, JWKSURL: jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := &auth.Cached{Next: v, Size: 100}
	tok := jwks.sign(t, "k1", time.Now(), nil)
	if _, err := c.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	jwks.serve(t, "k2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Verify(context.Background(), tok)
		if err != nil {
			if auth.ReasonOf(err) != auth.UnknownKid {
				t.Fatalf("refused as %s, want %s", auth.ReasonOf(err), auth.UnknownKid)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cached token of a rotated-out key still answers 10s after the rotation with MaxKeyAge 100ms (%d fetches)", jwks.fetches.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Tokens living longer than the maximum lifetime (24h unless configured)
// are refused: exp - iat, or for a token without iat, exp - now.
func TestTokenLifetimeIsCapped(t *testing.T) {
	jwks := newRotatingJWKS(t, "k1")
	now := &atomic.Int64{}
	v := verifierAt(t, jwks.URL, now)
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	at := clock()
	tests := []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"five minutes", nil, true},
		{"just under a day", map[string]any{"exp": at.Add(24*time.Hour - time.Minute).Unix()}, true},
		{"a year", map[string]any{"exp": at.Add(365 * 24 * time.Hour).Unix()}, false},
		{"a year, issued long ago", map[string]any{"iat": at.Add(-364 * 24 * time.Hour).Unix(), "exp": at.Add(time.Hour).Unix()}, false},
		{"no iat, expiring within a day", map[string]any{"iat": nil, "exp": at.Add(time.Hour).Unix()}, true},
		{"no iat, expiring in a year", map[string]any{"iat": nil, "exp": at.Add(365 * 24 * time.Hour).Unix()}, false},
	}
	for _, tt := range tests {
		_, err := v.Verify(context.Background(), jwks.sign(t, "k1", at, tt.claims))
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case !tt.ok && auth.ReasonOf(err) != auth.LifetimeExceeded:
			t.Errorf("%s: %v, want refused as lifetime_exceeded", tt.name, err)
		}
	}
}
