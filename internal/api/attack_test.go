package api_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keybridge/keybridge/internal/auth"
)

// testKey is a signing key the test trusts through its own JWKS, so the
// claim checks (issuer, audience, times) can be attacked precisely with
// Keycloak's real claims re-signed.
type testKey struct {
	key  *rsa.PrivateKey
	jwks *httptest.Server
}

func newTestKey(t *testing.T) *testKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "test-kid", Algorithm: "RS256", Use: "sig"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(set) }))
	t.Cleanup(srv.Close)
	return &testKey{key: k, jwks: srv}
}

func (k *testKey) sign(t *testing.T, header map[string]any, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "test-kid")
	for h, v := range header {
		opts = opts.WithHeader(jose.HeaderKey(h), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func decodeSeg(t *testing.T, seg string) map[string]any {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func clone(m map[string]any, set map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// TestTokenAttacks: every hostile variation of a real Keycloak token is refused.
func TestTokenAttacks(t *testing.T) {
	e := newDecEnv(t, "")
	real := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	parts := strings.Split(real, ".")
	claims := decodeSeg(t, parts[1])
	header := decodeSeg(t, parts[0])
	issuer := claims["iss"].(string)
	now := time.Now().Unix()

	res, _ := http.Get(e.kc.URL + "/realms/" + e.kc.Realm + "/protocol/openid-connect/certs")
	pub, _ := io.ReadAll(res.Body)
	res.Body.Close()
	hmacSign := func(h map[string]any, payload string) string {
		hs := b64(h)
		mac := hmac.New(sha256.New, pub)
		mac.Write([]byte(hs + "." + payload))
		return hs + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	swapHeader := func(set map[string]any) string { return b64(clone(header, set)) + "." + parts[1] + "." + parts[2] }
	swapPayload := func(p string) string { return parts[0] + "." + p + "." + parts[2] }

	// Attacks on the real token against the real JWKS.
	realCases := map[string]string{
		"alg none":                         b64(clone(header, map[string]any{"alg": "none"})) + "." + parts[1] + ".",
		"alg none with the original sig":   swapHeader(map[string]any{"alg": "none"}),
		"HS256 signed with the public key": hmacSign(clone(header, map[string]any{"alg": "HS256"}), parts[1]),
		"HS512 signed with the public key": hmacSign(clone(header, map[string]any{"alg": "HS512"}), parts[1]),
		"kid of an unknown key":            swapHeader(map[string]any{"kid": "unknown"}),
		"kid as a path":                    swapHeader(map[string]any{"kid": "../../../../etc/passwd"}),
		"kid as a URL":                     swapHeader(map[string]any{"kid": "http://127.0.0.1:1/evil.json"}),
		"jku to an attacker JWKS":          swapHeader(map[string]any{"jku": "http://127.0.0.1:1/jwks"}),
		"x5u to an attacker certificate":   swapHeader(map[string]any{"x5u": "http://127.0.0.1:1/cert"}),
		"one payload byte altered":         swapPayload(b64(clone(claims, map[string]any{"preferred_username": "alice"}))),
		"truncated":                        real[:len(real)-10],
		"doubled":                          real + "." + real,
		"whitespace padded":                " " + real + " ",
		"base64 with padding":              parts[0] + "." + parts[1] + "==" + "." + parts[2],
		"non-canonical JSON":               swapPayload(base64.RawURLEncoding.EncodeToString([]byte(" " + string(mustJSON(claims)) + " "))),
		"duplicate claims":                 swapPayload(base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(mustJSON(claims)), "{", `{"sub":"someone-else",`, 1)))),
		"huge token":                       real + strings.Repeat("A", 40000),
		"deeply nested claims":             swapPayload(base64.RawURLEncoding.EncodeToString([]byte(`{"a":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`))),
		"token from another realm":         userToken(t, e.kc, "other", "fastn-app", "mallory"),
		"token for another audience":       userToken(t, e.kc, e.kc.Realm, "admin-cli", "dana"),
		"garbage":                          "not.a.token",
	}
	tried, accepted := 0, 0
	for name, tok := range realCases {
		tried++
		if out := e.introspect(t, tok); out["active"] != false {
			accepted++
			t.Errorf("%s: accepted", name)
		}
	}

	// Claim attacks: Keycloak's real claims re-signed by a key this verifier
	// trusts, so only the claim checks stand between them and acceptance.
	k := newTestKey(t)
	v, err := auth.NewVerifier(context.Background(), auth.Options{Issuer: issuer, Audiences: []string{"keybridge"}, Algorithms: []string{"RS256"},
		Leeway: 30 * time.Second, MaxTokenBytes: 16 << 10, RefreshInterval: time.Minute, JWKSURL: k.jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	fresh := map[string]any{"exp": now + 300, "iat": now, "nbf": nil}
	if _, err := v.Verify(context.Background(), k.sign(t, nil, clone(claims, fresh))); err != nil {
		t.Fatalf("the re-signed base token must verify, or the claim cases prove nothing: %v", err)
	}
	claimCases := map[string]struct {
		set    map[string]any
		header map[string]any
		reason auth.Reason
	}{
		"expired":                        {map[string]any{"exp": now - 120, "iat": now - 400}, nil, auth.Expired},
		"not yet valid":                  {map[string]any{"exp": now + 300, "iat": now, "nbf": now + 600}, nil, auth.NotYetValid},
		"issued in the future":           {map[string]any{"exp": now + 900, "iat": now + 600}, nil, auth.IssuedInFuture},
		"no expiry":                      {map[string]any{"exp": nil}, nil, auth.Malformed},
		"wrong issuer":                   {clone(fresh, map[string]any{"iss": "http://127.0.0.1:8180/realms/other"}), nil, auth.Issuer},
		"look-alike issuer":              {clone(fresh, map[string]any{"iss": issuer + ".evil.example"}), nil, auth.Issuer},
		"issuer with a trailing slash":   {clone(fresh, map[string]any{"iss": issuer + "/"}), nil, auth.Issuer},
		"wrong audience and azp":         {clone(fresh, map[string]any{"aud": "account", "azp": "other-app"}), nil, auth.Audience},
		"an ID token, not an access one": {clone(fresh, map[string]any{"typ": "ID"}), nil, auth.TokenType},
		"no subject":                     {map[string]any{"exp": now + 300, "iat": now, "nbf": nil, "sub": nil}, nil, auth.Malformed},
		"jku header is ignored":          {clone(fresh, map[string]any{"iss": "https://evil.example"}), map[string]any{"jku": k.jwks.URL}, auth.Issuer},
	}
	for name, c := range claimCases {
		tried++
		_, err := v.Verify(context.Background(), k.sign(t, c.header, clone(claims, c.set)))
		if err == nil {
			accepted++
			t.Errorf("%s: accepted", name)
		} else if auth.ReasonOf(err) != c.reason {
			t.Errorf("%s: refused as %s, want %s", name, auth.ReasonOf(err), c.reason)
		}
	}

	// Tokens of people Keycloak has disabled or deleted, still signed and unexpired.
	for _, status := range []string{"inactive", "deleted"} {
		tried++
		sub := decodeSeg(t, strings.Split(userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "gus"), ".")[1])["sub"].(string)
		if _, err := e.st.SysPool().Exec(context.Background(), `UPDATE people SET status = $2 WHERE id = $1`, sub, status); err != nil {
			t.Fatal(err)
		}
		if err := e.dir.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		if out := e.introspect(t, userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "gus")); out["active"] != false {
			accepted++
			t.Errorf("token of a %s person accepted", status)
		}
	}
	fmt.Printf("RELIABILITY attacks tried=%d bad=%d\n", tried, accepted)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// FuzzTokenVerify: arbitrary token strings are refused or verified, never a panic.
func FuzzTokenVerify(f *testing.F) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k", Algorithm: "RS256", Use: "sig"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(set) }))
	defer srv.Close()
	v, err := auth.NewVerifier(context.Background(), auth.Options{Issuer: "https://i", Audiences: []string{"a"}, Algorithms: []string{"RS256"},
		MaxTokenBytes: 8192, RefreshInterval: time.Hour, JWKSURL: srv.URL})
	if err != nil {
		f.Fatal(err)
	}
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "k"))
	jws, _ := s.Sign([]byte(`{"iss":"https://i","aud":"a","sub":"s","exp":9999999999}`))
	good, _ := jws.CompactSerialize()
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add(strings.Repeat(".", 100))
	f.Fuzz(func(t *testing.T, tok string) {
		tk, err := v.Verify(context.Background(), tok)
		if err == nil && tk.Subject == "" {
			t.Fatal("verified a token without a subject")
		}
	})
}
