// Package auth verifies bearer tokens locally: signature against the realm's
// JWKS (discovered once, cached, refetched at most once per interval for an
// unknown kid, and in the background every MaxKeyAge), allowed asymmetric
// algorithms only, issuer, audience or azp, exp, nbf and iat within a leeway,
// and a maximum lifetime. Keycloak is never called per request.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// Reason is a bounded label for why a token was refused: it goes to a
// metric and the log, never to the caller.
type Reason string

// Refusal reasons.
const (
	Malformed       Reason = "malformed"
	Oversize        Reason = "oversize"
	Algorithm       Reason = "algorithm"
	UnknownKid      Reason = "unknown_kid"
	Signature       Reason = "signature"
	Issuer          Reason = "issuer"
	Audience        Reason = "audience"
	Expired         Reason = "expired"
	NotYetValid     Reason = "not_yet_valid"
	IssuedInFuture  Reason = "issued_in_future"
	TokenType       Reason = "token_type"
	Revoked         Reason = "revoked"
	KeysUnavailable Reason = "keys_unavailable"
	// LifetimeExceeded: exp - iat (or, without iat, exp - now) is over
	// Options.MaxLifetime.
	LifetimeExceeded Reason = "lifetime_exceeded"
)

// Error is a refused token.
type Error struct {
	Reason Reason
	Detail string // for the log; never contains the token
}

func (e *Error) Error() string { return "token refused: " + string(e.Reason) + ": " + e.Detail }

func refuse(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf extracts the reason of a refusal.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return Malformed
}

// Token is a verified token.
type Token struct {
	Claims  map[string]any
	Subject string
	Expiry  time.Time
	// Until is the last instant the token is accepted: Expiry plus the
	// verifier's leeway. Caches hold a token exactly this long, so a cached
	// token and a freshly verified one get the same answer.
	Until     time.Time
	IssuedAt  time.Time
	NotBefore time.Time
	Hash      [32]byte // SHA-256 of the raw token: cache key, never logged as the token
	// Kid is the id of the key that signed the token (local verification).
	Kid string
	// keys is the verifier whose JWKS held Kid, at generation keyGen: a
	// cache answers the token only while that JWKS still holds Kid. nil for
	// tokens not verified against a JWKS (remote introspection).
	keys   *Verifier
	keyGen uint64
}

// keyHeld reports whether the key that signed t is still in its verifier's
// JWKS, and the key set generation the answer holds for: a caller that saw
// t's key at generation gen already skips the lookup. Tokens not verified
// against a JWKS always report held.
func (t *Token) keyHeld(gen uint64) (held bool, current uint64) {
	if t.keys == nil {
		return true, 0
	}
	return t.keys.holds(t.Kid, gen)
}

// Options configure a Verifier.
type Options struct {
	Issuer          string
	Audiences       []string
	Algorithms      []string
	Leeway          time.Duration
	MaxTokenBytes   int
	RefreshInterval time.Duration // minimum time between refetches for an unknown kid
	// MaxKeyAge is how often the JWKS is fetched again in the background,
	// with or without traffic, so a key Keycloak removed (rotated out after
	// a leak) stops verifying — cached tokens it signed included — within
	// MaxKeyAge and one fetch; 5 minutes when zero. A failed fetch is retried
	// after RefreshInterval, and the keys held meanwhile keep verifying.
	MaxKeyAge time.Duration
	// MaxLifetime refuses tokens whose exp is more than this after their
	// iat, or, without iat, more than this from now; 24 hours when zero.
	MaxLifetime time.Duration
	JWKSURL     string // skip discovery when set
	HTTPClient  *http.Client
	Now         func() time.Time
	// OnRefresh observes JWKS fetches: "success", "failure", "rate_limited".
	OnRefresh func(outcome string)
}

// Verifier checks tokens against one issuer.
type Verifier struct {
	opt     Options
	mu      sync.RWMutex
	keys    jose.JSONWebKeySet
	fetched time.Time
	// gen counts successful fetches (written with mu held): a cache entry
	// that saw its key at the current generation needs no lookup.
	gen atomic.Uint64
	// attempted is the last fetch's start, guarded by fetchMu.
	attempted time.Time
	aging     atomic.Bool // a background refresh of an old JWKS is under way
	fetchMu   sync.Mutex

	timerMu sync.Mutex
	timer   *time.Timer // the next scheduled refresh
	closed  bool
}

// NewVerifier discovers the issuer's JWKS (unless Options.JWKSURL is set)
// and fetches the keys. Discovery uses go-oidc; it is retried by the caller
// until Keycloak answers.
func NewVerifier(ctx context.Context, opt Options) (*Verifier, error) {
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.OnRefresh == nil {
		opt.OnRefresh = func(string) {}
	}
	if opt.MaxKeyAge <= 0 {
		opt.MaxKeyAge = 5 * time.Minute
	}
	if opt.MaxLifetime <= 0 {
		opt.MaxLifetime = 24 * time.Hour
	}
	if opt.JWKSURL == "" {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, opt.HTTPClient), opt.Issuer)
		if err != nil {
			return nil, fmt.Errorf("oidc discovery of %s: %w", opt.Issuer, err)
		}
		var meta struct {
			JWKS string `json:"jwks_uri"`
		}
		if err := p.Claims(&meta); err != nil || meta.JWKS == "" {
			return nil, fmt.Errorf("oidc discovery of %s: no jwks_uri", opt.Issuer)
		}
		opt.JWKSURL = meta.JWKS
	}
	v := &Verifier{opt: opt}
	if err := v.refresh(ctx, true); err != nil {
		return nil, err
	}
	v.schedule(v.opt.MaxKeyAge)
	return v, nil
}

// Close stops the scheduled refreshes. Verification goes on with the keys
// held.
func (v *Verifier) Close() {
	v.timerMu.Lock()
	defer v.timerMu.Unlock()
	v.closed = true
	if v.timer != nil {
		v.timer.Stop()
	}
}

// schedule arms the next background refresh, after d.
func (v *Verifier) schedule(d time.Duration) {
	v.timerMu.Lock()
	defer v.timerMu.Unlock()
	switch {
	case v.closed:
	case v.timer == nil:
		v.timer = time.AfterFunc(d, v.scheduled)
	default:
		v.timer.Reset(d)
	}
}

// scheduled refetches the JWKS every MaxKeyAge whether or not tokens
// arrive: requests answered from a cache never reach the verifier, and a
// key removed from the JWKS must stop verifying for them too. A failure is
// retried after RefreshInterval.
func (v *Verifier) scheduled() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	next := v.opt.MaxKeyAge
	if err := v.refresh(ctx, true); err != nil {
		next = min(next, max(v.opt.RefreshInterval, time.Second))
	}
	v.schedule(next)
}

// refresh refetches the JWKS; unless forced, at most once per interval.
func (v *Verifier) refresh(ctx context.Context, force bool) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	// Attempts are limited, not only successes: with the JWKS endpoint
	// failing, tokens with unknown kids must not each trigger a fetch.
	if !force && v.opt.Now().Sub(v.attempted) < v.opt.RefreshInterval {
		v.opt.OnRefresh("rate_limited")
		return errors.New("jwks refresh rate limited")
	}
	v.attempted = v.opt.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.opt.JWKSURL, nil)
	if err != nil {
		return err
	}
	res, err := v.opt.HTTPClient.Do(req)
	if err != nil {
		v.opt.OnRefresh("failure")
		return fmt.Errorf("fetch jwks: %w", err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if res.StatusCode != http.StatusOK {
		v.opt.OnRefresh("failure")
		return fmt.Errorf("fetch jwks: status %d", res.StatusCode)
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, res.Body, 1<<20)).Decode(&set); err != nil {
		v.opt.OnRefresh("failure")
		return fmt.Errorf("decode jwks: %w", err)
	}
	// Only public, signing keys: a symmetric key in a JWKS would let HS256
	// tokens through.
	kept := set.Keys[:0]
	for _, k := range set.Keys {
		if k.IsPublic() && k.Use != "enc" {
			kept = append(kept, k)
		}
	}
	set.Keys = kept
	v.mu.Lock()
	v.keys, v.fetched = set, v.opt.Now()
	v.gen.Add(1)
	v.mu.Unlock()
	v.opt.OnRefresh("success")
	return nil
}

// refreshIfOld refetches, in the background and one at a time, a JWKS
// older than MaxKeyAge and RefreshInterval together: the scheduled refresh
// is late (the process was suspended, say) or failing. Verification goes on
// with the keys held meanwhile.
func (v *Verifier) refreshIfOld() {
	v.mu.RLock()
	old := v.opt.Now().Sub(v.fetched) > v.opt.MaxKeyAge+v.opt.RefreshInterval
	v.mu.RUnlock()
	if !old || !v.aging.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.aging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = v.refresh(ctx, false)
	}()
}

// key returns the key kid names and the key set generation it was found in.
func (v *Verifier) key(kid string) (jose.JSONWebKey, uint64, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, k := range v.keys.Keys {
		if k.KeyID == kid {
			return k, v.gen.Load(), true
		}
	}
	return jose.JSONWebKey{}, 0, false
}

// holds reports whether the JWKS still holds kid, and at which generation;
// one atomic load when gen is already the current one.
func (v *Verifier) holds(kid string, gen uint64) (bool, uint64) {
	if cur := v.gen.Load(); cur == gen {
		return true, cur
	}
	_, cur, ok := v.key(kid)
	return ok, cur
}

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Verify checks a compact JWS access token.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if v.opt.MaxTokenBytes > 0 && len(raw) > v.opt.MaxTokenBytes {
		return nil, refuse(Oversize, "%d bytes", len(raw))
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, refuse(Malformed, "not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, refuse(Malformed, "header is not base64url")
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, refuse(Malformed, "header is not JSON")
	}
	if !slices.Contains(v.opt.Algorithms, h.Alg) {
		return nil, refuse(Algorithm, "alg %q is not allowed", truncate(h.Alg, 16))
	}
	if parts[2] == "" {
		return nil, refuse(Signature, "no signature")
	}
	algs := make([]jose.SignatureAlgorithm, len(v.opt.Algorithms))
	for i, a := range v.opt.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return nil, refuse(Malformed, "parse: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, refuse(Malformed, "want one signature")
	}
	// jku, x5u and embedded jwk headers are ignored: keys come only from
	// the issuer's JWKS.
	k, gen, ok := v.key(h.Kid)
	v.refreshIfOld()
	if !ok {
		// Look again even when this refresh was rate limited: a concurrent
		// one may just have brought the key.
		_ = v.refresh(ctx, false)
		k, gen, ok = v.key(h.Kid)
		if !ok {
			return nil, refuse(UnknownKid, "kid %q not in the JWKS", truncate(h.Kid, 64))
		}
	}
	if k.Algorithm != "" && k.Algorithm != h.Alg {
		return nil, refuse(Algorithm, "alg %q does not match key %q", h.Alg, k.Algorithm)
	}
	payload, err := jws.Verify(k)
	if err != nil {
		return nil, refuse(Signature, "signature does not verify")
	}
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, refuse(Malformed, "claims are not a JSON object")
	}
	normalizeNumbers(claims)
	t, err := v.checkClaims(claims, payload)
	if err != nil {
		return nil, err
	}
	t.Kid, t.keys, t.keyGen = h.Kid, v, gen
	return t, nil
}

func (v *Verifier) checkClaims(claims map[string]any, payload []byte) (*Token, error) {
	if iss, _ := claims["iss"].(string); iss != v.opt.Issuer {
		return nil, refuse(Issuer, "iss %q", truncate(iss, 128))
	}
	if typ, ok := claims["typ"].(string); ok && !strings.EqualFold(typ, "Bearer") {
		return nil, refuse(TokenType, "typ %q is not an access token", truncate(typ, 32))
	}
	if !v.audienceOK(claims) {
		return nil, refuse(Audience, "aud and azp name none of %v", v.opt.Audiences)
	}
	now := v.opt.Now()
	exp, ok := numericDate(claims["exp"])
	if !ok {
		return nil, refuse(Malformed, "exp missing")
	}
	if now.After(exp.Add(v.opt.Leeway)) {
		return nil, refuse(Expired, "expired at %s", exp.UTC().Format(time.RFC3339))
	}
	t := &Token{Claims: claims, Expiry: exp, Until: exp.Add(v.opt.Leeway), Hash: sha256.Sum256(payload)}
	if nbf, ok := numericDate(claims["nbf"]); ok {
		if now.Add(v.opt.Leeway).Before(nbf) {
			return nil, refuse(NotYetValid, "not before %s", nbf.UTC().Format(time.RFC3339))
		}
		t.NotBefore = nbf
	}
	if iat, ok := numericDate(claims["iat"]); ok {
		if iat.After(now.Add(v.opt.Leeway)) {
			return nil, refuse(IssuedInFuture, "issued at %s", iat.UTC().Format(time.RFC3339))
		}
		t.IssuedAt = iat
		if life := exp.Sub(iat); life > v.opt.MaxLifetime {
			return nil, refuse(LifetimeExceeded, "lives %s from iat to exp, over the maximum lifetime %s", life, v.opt.MaxLifetime)
		}
	} else if left := exp.Sub(now); left > v.opt.MaxLifetime {
		return nil, refuse(LifetimeExceeded, "no iat, and exp is %s away, over the maximum lifetime %s", left.Round(time.Second), v.opt.MaxLifetime)
	}
	t.Subject, _ = claims["sub"].(string)
	if t.Subject == "" {
		return nil, refuse(Malformed, "sub missing")
	}
	return t, nil
}

func (v *Verifier) audienceOK(claims map[string]any) bool {
	var auds []string
	switch a := claims["aud"].(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	if azp, ok := claims["azp"].(string); ok {
		auds = append(auds, azp)
	}
	for _, want := range v.opt.Audiences {
		if slices.Contains(auds, want) {
			return true
		}
	}
	return false
}

func numericDate(v any) (time.Time, bool) {
	switch n := v.(type) {
	case float64:
		return time.Unix(int64(n), 0), true
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return time.Time{}, false
		}
		return time.Unix(int64(f), 0), true
	}
	return time.Time{}, false
}

// normalizeNumbers turns json.Number into float64 so claims look like
// encoding/json's usual output to the rest of keybridge.
func normalizeNumbers(m map[string]any) {
	for k, v := range m {
		m[k] = normalize(v)
	}
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		normalizeNumbers(x)
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	}
	return v
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
