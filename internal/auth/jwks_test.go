package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keybridge/keybridge/internal/auth"
)

func signWithKid(t *testing.T, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"iss": "https://kc.test/realms/r", "sub": "u", "aud": "keybridge", "exp": time.Now().Add(time.Hour).Unix()})
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

// verifierAt is a verifier of the JWKS at url whose clock reads now
// (nanoseconds), which starts at the real time.
func verifierAt(t *testing.T, url string, now *atomic.Int64) *auth.Verifier {
	t.Helper()
	now.Store(time.Now().UnixNano())
	v, err := auth.NewVerifier(context.Background(), auth.Options{Issuer: "https://kc.test/realms/r", Audiences: []string{"keybridge"},
		Algorithms: []string{"RS256"}, MaxTokenBytes: 16 << 10, RefreshInterval: time.Minute, JWKSURL: url,
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// With the JWKS endpoint failing, tokens naming an unknown kid do not each
// trigger a fetch: attempts are limited to one per refresh interval, not
// only successes.
func TestJWKSRefetchIsLimitedWhenItFails(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int64
	var down atomic.Bool
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	}))
	defer jwks.Close()
	now := &atomic.Int64{}
	v := verifierAt(t, jwks.URL, now)
	if _, err := v.Verify(context.Background(), signWithKid(t, key, "k1")); err != nil {
		t.Fatalf("known kid: %v", err)
	}
	down.Store(true)
	now.Add(int64(2 * time.Minute)) // past the interval: one attempt is due
	for range 50 {
		if _, err := v.Verify(context.Background(), signWithKid(t, key, "rotated")); err == nil {
			t.Fatal("a token with an unknown kid was accepted")
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches for 50 unknown-kid tokens against a failing endpoint, want 2 (start-up and one attempt)", n)
	}
}

// A key Keycloak has removed stops verifying once the JWKS is older than
// MaxKeyAge, without waiting for a token with an unknown kid.
func TestRemovedKeyStopsVerifyingAfterMaxKeyAge(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var removed atomic.Bool
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
		if removed.Load() {
			set.Keys = nil
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer jwks.Close()
	now := &atomic.Int64{}
	v := verifierAt(t, jwks.URL, now)
	tok := signWithKid(t, key, "k1")
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	removed.Store(true) // rotated out in Keycloak
	now.Add(int64(16 * time.Minute))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			return // refused once the background refresh landed
		}
		if time.Now().After(deadline) {
			t.Fatal("a key removed from the JWKS still verifies after MaxKeyAge")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
