// Package identity turns a bearer token into a caller: verified locally
// (package auth), refused when Keycloak revoked it (its session ended, or a
// not-before: package revocation) or sync knows the subject is disabled or
// deleted (package directory), and resolved by the mapping rules together
// with the subject's stored and temporary assignments.
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
	// Revocations refuses tokens Keycloak revoked before their expiry (an
	// ended session, a not-before of the realm, client or user), before any
	// cache answers for them; nil refuses none.
	Revocations Revocations
	// OnRefuse observes every refusal with its bounded reason.
	OnRefuse func(ctx context.Context, reason auth.Reason, err error)
	OnAccept func()
	Now      func() time.Time
	MaxCache int

	mu    sync.Mutex
	cache map[cacheKey]cached
}

// cacheKey is a token and the tenant the request named: a grant resolved
// in one tenant never answers a request naming another.
type cacheKey struct {
	token  [32]byte
	tenant string
}

// Revocations reports a verified token Keycloak has revoked, and why
// (package revocation).
type Revocations interface {
	Revoked(tok *auth.Token) (why string, revoked bool)
}

type cached struct {
	caller  Caller
	version uint64
	until   time.Time // the first stored assignment's expiry after resolving; zero: none
}

// Identify verifies and resolves a token in the tenant its claims or the
// subject's synced membership give (IdentifyIn naming none).
func (r *Resolver) Identify(ctx context.Context, raw string) (Caller, error) {
	return r.IdentifyIn(ctx, raw, "")
}

// IdentifyIn verifies a token and resolves it in the tenant the request
// names ("" names none), by mapping.Engine.ResolveIn with the subject's
// synced memberships. A tenant the subject may not act in is refused with
// a *mapping.TenantError, which carries the grant without the choice for
// the audit; the token itself is fine, so that is no token refusal. A
// subject left with several tenants and no choice resolves with
// Grant.TenantRequired: what to answer is the route's.
func (r *Resolver) IdentifyIn(ctx context.Context, raw, tenant string) (Caller, error) {
	tok, err := r.Verifier.Verify(ctx, raw)
	if err != nil {
		r.refuse(ctx, auth.ReasonOf(err), err)
		return Caller{}, err
	}
	if r.Revocations != nil {
		if why, revoked := r.Revocations.Revoked(tok); revoked {
			err := &auth.Error{Reason: auth.Revoked, Detail: why}
			r.refuse(ctx, auth.Revoked, err)
			return Caller{}, err
		}
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
	key := cacheKey{token: tok.Hash, tenant: tenant}
	r.mu.Lock()
	c, ok := r.cache[key]
	r.mu.Unlock()
	// A grant resolved with a temporary assignment (a break-glass
	// PlatformAdmin, say) is resolved again once it expires: the RLS session
	// (app.platform, app.role) and the introspection memo come from it.
	if ok && c.version == version && (c.until.IsZero() || now.Before(c.until)) {
		if r.OnAccept != nil {
			r.OnAccept()
		}
		if err := r.disabledTenant(c.caller.Grant); err != nil {
			return Caller{}, err
		}
		return c.caller, nil
	}
	engine := r.Dir.Engine()
	g, err := engine.ResolveIn(mapping.FactsFromClaims(tok.Claims, engine.Config().Claims), person.Assignments, now,
		mapping.Placement{Named: tenant, Synced: person.Tenants})
	if err != nil {
		if r.OnAccept != nil {
			r.OnAccept() // the token was good; the tenant it named was not
		}
		return Caller{}, err
	}
	caller := Caller{Token: tok, Grant: g, Memo: &Memo{}}
	var until time.Time
	for _, a := range person.Assignments {
		if a.ExpiresAt.After(now) && (until.IsZero() || a.ExpiresAt.Before(until)) {
			until = a.ExpiresAt
		}
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= max(r.MaxCache, 1) {
		r.cache = map[cacheKey]cached{} // a full reset is cheap and bounds memory
	}
	r.cache[key] = cached{caller: caller, version: version, until: until}
	r.mu.Unlock()
	if r.OnAccept != nil {
		r.OnAccept()
	}
	if err := r.disabledTenant(g); err != nil {
		return Caller{}, err
	}
	return caller, nil
}

// disabledTenant refuses a grant acting in a disabled tenant with a
// *mapping.TenantError (Disabled), answered and audited as every refused
// tenant is. A platform caller (a global bypass) still acts there: it is
// who inspects the tenant and enables it again.
func (r *Resolver) disabledTenant(g *mapping.Grant) error {
	if g == nil || g.Tenant == "" || g.Global() || !r.Dir.TenantDisabled(g.Tenant) {
		return nil
	}
	return &mapping.TenantError{Tenant: g.Tenant, Grant: g, Disabled: true}
}

// Memo holds encodings computed from one resolved caller: a cached
// resolution answers the same until the token or the directory changes, and
// then the resolution and its memo are replaced together.
type Memo struct {
	// Introspection is the RFC 7662 answer for the token, once encoded.
	Introspection atomic.Pointer[[]byte]
}

// Authenticate implements middleware.Authenticator.
func (r *Resolver) Authenticate(ctx context.Context, raw string) (*mapping.Grant, error) {
	return r.AuthenticateIn(ctx, raw, "")
}

// AuthenticateIn implements middleware.TenantAuthenticator: IdentifyIn's
// grant, or its error (a *mapping.TenantError for a tenant the subject may
// not act in).
func (r *Resolver) AuthenticateIn(ctx context.Context, raw, tenant string) (*mapping.Grant, error) {
	c, err := r.IdentifyIn(ctx, raw, tenant)
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
