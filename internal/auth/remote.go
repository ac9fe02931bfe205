package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Remote asks Keycloak's own introspection endpoint about tokens keybridge
// cannot verify locally (opaque tokens). Answers are cached by a hash of the
// token: active ones until they expire (at most TTL), inactive ones briefly,
// so a flood of garbage cannot turn into a flood of calls to Keycloak.
type Remote struct {
	Endpoint     string // <issuer>/protocol/openid-connect/token/introspect
	ClientID     string
	ClientSecret string
	Client       *http.Client
	TTL          time.Duration
	Now          func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]remoteEntry // active answers
	// refused holds inactive answers apart: a flood of garbage tokens fills
	// and resets only this map, never the active tokens' answers.
	refused map[[32]byte]remoteEntry
}

type remoteEntry struct {
	tok   *Token
	until time.Time
}

func (r *Remote) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Verify implements TokenVerifier.
func (r *Remote) Verify(ctx context.Context, raw string) (*Token, error) {
	key := tokenKey(raw)
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[key]
	if !ok {
		e, ok = r.refused[key]
	}
	r.mu.Unlock()
	if ok && now.Before(e.until) {
		if e.tok == nil {
			return nil, refuse(Revoked, "inactive per Keycloak introspection (cached)")
		}
		return e.tok, nil
	}
	tok, err := r.ask(ctx, raw, key)
	until := now.Add(5 * time.Second)
	if err == nil {
		until = now.Add(r.TTL)
		if tok.Expiry.Before(until) {
			until = tok.Expiry
		}
		// Caches in front of this one keep the token no longer: a token
		// revoked in Keycloak is refused within TTL.
		tok.Until = until
	} else if ReasonOf(err) == KeysUnavailable {
		return nil, err // Keycloak unreachable: don't cache an outage
	}
	r.mu.Lock()
	m := &r.cache
	if tok == nil {
		m = &r.refused
	}
	if *m == nil || len(*m) > 10000 {
		*m = map[[32]byte]remoteEntry{}
	}
	(*m)[key] = remoteEntry{tok: tok, until: until}
	r.mu.Unlock()
	return tok, err
}

func (r *Remote) ask(ctx context.Context, raw string, key [32]byte) (*Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Endpoint, strings.NewReader(url.Values{"token": {raw}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(r.ClientID), url.QueryEscape(r.ClientSecret))
	client := r.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, &Error{Reason: KeysUnavailable, Detail: "introspection endpoint unreachable"}
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &Error{Reason: KeysUnavailable, Detail: fmt.Sprintf("introspection answered %d", res.StatusCode)}
	}
	var claims map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(nil, res.Body, 1<<20)).Decode(&claims); err != nil {
		return nil, refuse(Malformed, "introspection answer is not JSON")
	}
	if active, _ := claims["active"].(bool); !active {
		return nil, refuse(Revoked, "inactive per Keycloak introspection")
	}
	sub, _ := claims["sub"].(string)
	exp, ok := numericDate(claims["exp"])
	if sub == "" || !ok {
		return nil, refuse(Malformed, "introspection answer lacks sub or exp")
	}
	t := &Token{Claims: claims, Subject: sub, Expiry: exp, Until: exp, Hash: key}
	if iat, ok := numericDate(claims["iat"]); ok {
		t.IssuedAt = iat
	}
	return t, nil
}

// Fallback verifies locally and asks Remote only about opaque tokens (no
// dot at all); a JWT that fails local checks is refused, never re-asked.
type Fallback struct {
	Local  TokenVerifier
	Remote TokenVerifier
}

// Verify implements TokenVerifier.
func (f *Fallback) Verify(ctx context.Context, raw string) (*Token, error) {
	t, err := f.Local.Verify(ctx, raw)
	// Only tokens without a dot go remote: anything shaped like a JWT is
	// judged locally alone, since Keycloak would read "<jwt>." as the JWT
	// and skip the audience and issuer checks made here.
	if err != nil && f.Remote != nil && !strings.Contains(raw, ".") && ReasonOf(err) == Malformed {
		return f.Remote.Verify(ctx, raw)
	}
	return t, err
}
