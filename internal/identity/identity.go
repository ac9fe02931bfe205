// Package identity turns a bearer token into a caller: verified locally
// (package auth), refused when sync knows the subject is disabled or deleted
// (package directory), and resolved by the mapping rules together with the
// subject's stored and temporary assignments.
package identity

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/mapping"
)

// Caller is a verified, resolved token.
type Caller struct {
	Token *auth.Token
	Grant *mapping.Grant
	// Memo keeps what is derived from this token and grant alone, for as
	// long as the resolution is cached; nil when nothing may be kept.
	Memo *Memo
}

// Resolver resolves tokens and remembers the grant of a token until the
// token expires or the directory changes.
type Resolver struct {
	Verifier auth.TokenVerifier
	Dir      *directory.Directory
	// OnRefuse observes every refusal with its bounded reason.
	OnRefuse func(ctx context.Context, reason auth.Reason, err error)
	OnAccept func()
	Now      func() time.Time
	MaxCache int

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	caller  Caller
	version uint64
	until   time.Time // the first stored assignment's expiry after resolving; zero: none
}

// Identify verifies and resolves a token.
func (r *Resolver) Identify(ctx context.Context, raw string) (Caller, error) {
	tok, err := r.Verifier.Verify(ctx, raw)
	if err != nil {
		r.refuse(ctx, auth.ReasonOf(err), err)
		return Caller{}, err
	}
	// The version is read before the person: a change landing in between
	// then makes the entry stale at once, instead of caching the old view
	// under the new version.
	version := r.Dir.Version()
	person, known := r.Dir.Lookup(tok.Subject)
	if known && person.Revoked() {
		err := &auth.Error{Reason: auth.Revoked, Detail: "subject is " + person.Status + " in Keycloak"}
		r.refuse(ctx, auth.Revoked, err)
		return Caller{}, err
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[tok.Hash]
	r.mu.Unlock()
	// A grant resolved with a temporary assignment (a break-glass
	// PlatformAdmin, say) is resolved again once it expires: the RLS session
	// (app.platform, app.role) and the introspection memo come from it.
	if ok && c.version == version && (c.until.IsZero() || now.Before(c.until)) {
		if r.OnAccept != nil {
			r.OnAccept()
		}
		return c.caller, nil
	}
	engine := r.Dir.Engine()
	g := engine.Resolve(mapping.FactsFromClaims(tok.Claims, engine.Config().Claims), person.Assignments, now)
	caller := Caller{Token: tok, Grant: g, Memo: &Memo{}}
	var until time.Time
	for _, a := range person.Assignments {
		if a.ExpiresAt.After(now) && (until.IsZero() || a.ExpiresAt.Before(until)) {
			until = a.ExpiresAt
		}
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= max(r.MaxCache, 1) {
		r.cache = map[[32]byte]cached{} // a full reset is cheap and bounds memory
	}
	r.cache[tok.Hash] = cached{caller: caller, version: version, until: until}
	r.mu.Unlock()
	if r.OnAccept != nil {
		r.OnAccept()
	}
	return caller, nil
}

// Authenticate implements middleware.Authenticator.
// Memo holds encodings computed from one resolved caller: a cached
// resolution answers the same until the token or the directory changes, and
// then the resolution and its memo are replaced together.
type Memo struct {
	// Introspection is the RFC 7662 answer for the token, once encoded.
	Introspection atomic.Pointer[[]byte]
}

func (r *Resolver) Authenticate(ctx context.Context, raw string) (*mapping.Grant, error) {
	c, err := r.Identify(ctx, raw)
	if err != nil {
		return nil, err
	}
	return c.Grant, nil
}

func (r *Resolver) refuse(ctx context.Context, reason auth.Reason, err error) {
	if r.OnRefuse != nil {
		r.OnRefuse(ctx, reason, err)
	}
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
