package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/testenv"
)

// TestRemoteIntrospectionAgainstKeycloak asks the real Keycloak.
func TestRemoteIntrospectionAgainstKeycloak(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	token := kc.UserToken(t, "alice")
	r := &auth.Remote{Endpoint: kc.URL + "/realms/" + kc.Realm + "/protocol/openid-connect/token/introspect", ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, TTL: time.Minute}
	tok, err := r.Verify(context.Background(), token)
	if err != nil || tok.Subject == "" || tok.Claims["preferred_username"] != "alice" {
		t.Fatalf("active token: %v %v", tok, err)
	}
	if _, err := r.Verify(context.Background(), "opaque-garbage"); auth.ReasonOf(err) != auth.Revoked {
		t.Fatalf("garbage: %v", err)
	}
}

// TestRemoteIntrospectionCachesAndFallsBackOnlyForOpaqueTokens uses a fake
// endpoint to count calls, which the real server cannot report.
func TestRemoteIntrospectionCachesAndFallsBackOnlyForOpaqueTokens(t *testing.T) {
	var calls atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		if v.Get("token") == "good-opaque" {
			_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"active": false})
	}))
	defer fake.Close()
	remote := &auth.Remote{Endpoint: fake.URL, ClientID: "c", ClientSecret: "s", TTL: time.Minute}
	local := auth.TokenVerifier(failing{})
	f := &auth.Fallback{Local: local, Remote: remote}
	for i := 0; i < 5; i++ {
		if tok, err := f.Verify(context.Background(), "good-opaque"); err != nil || tok.Subject != "u1" {
			t.Fatalf("opaque token: %v %v", tok, err)
		}
		if _, err := f.Verify(context.Background(), "bad-opaque"); err == nil {
			t.Fatal("inactive opaque token accepted")
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls to the introspection endpoint, want 2 (the rest cached)", n)
	}
	// Keycloak reads "<jwt>." and "<jwt>.." as the JWT (Java's split drops
	// empty trailing parts) and would skip the audience checks made locally.
	for _, raw := range []string{"a.b.c", "a.b.c.", "a.b.c..", "a.b"} {
		if _, err := f.Verify(context.Background(), raw); err == nil || calls.Load() != 2 {
			t.Errorf("%q: a token with a dot that fails locally must not be asked remotely", raw)
		}
	}
}

// A token Keycloak stops calling active is refused within Remote's TTL,
// even behind the token cache, which keeps tokens until their Until.
func TestRemoteTTLHoldsBehindTheTokenCache(t *testing.T) {
	var active atomic.Bool
	active.Store(true)
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"active": active.Load(), "sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
	}))
	defer fake.Close()
	now := time.Now()
	clock := func() time.Time { return now }
	remote := &auth.Remote{Endpoint: fake.URL, ClientID: "c", ClientSecret: "s", TTL: time.Minute, Now: clock}
	cached := &auth.Cached{Next: &auth.Fallback{Local: failing{}, Remote: remote}, Size: 10, Now: clock}
	if _, err := cached.Verify(context.Background(), "opaque"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute) // past the TTL, still active: asked again, accepted
	if _, err := cached.Verify(context.Background(), "opaque"); err != nil {
		t.Fatalf("an active token refused after the remote TTL: %v", err)
	}
	active.Store(false) // revoked in Keycloak
	now = now.Add(2 * time.Minute)
	if _, err := cached.Verify(context.Background(), "opaque"); err == nil {
		t.Fatal("a token revoked in Keycloak is still accepted after the remote TTL")
	}
}

type failing struct{}

func (failing) Verify(context.Context, string) (*auth.Token, error) {
	return nil, &auth.Error{Reason: auth.Malformed, Detail: "not a JWS"}
}

// A flood of distinct garbage tokens does not evict the answers cached for
// active ones: each active token still costs Keycloak one call.
func TestRemoteGarbageFloodKeepsActiveAnswers(t *testing.T) {
	var good atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("token") == "good-opaque" {
			good.Add(1)
			_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"active": false})
	}))
	defer fake.Close()
	remote := &auth.Remote{Endpoint: fake.URL, ClientID: "c", ClientSecret: "s", TTL: time.Hour}
	if _, err := remote.Verify(context.Background(), "good-opaque"); err != nil {
		t.Fatal(err)
	}
	for i := range 10050 {
		_, _ = remote.Verify(context.Background(), fmt.Sprint("garbage-", i))
	}
	if _, err := remote.Verify(context.Background(), "good-opaque"); err != nil {
		t.Fatal(err)
	}
	if n := good.Load(); n != 1 {
		t.Errorf("the active token was asked %d times, want 1: the garbage evicted its answer", n)
	}
}
