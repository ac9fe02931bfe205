package mapping

import (
	"errors"
	"slices"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// A request acts in one active tenant (DESIGN.md, "Data model"): the one it
// names, if the subject may act there (Grant.MayActIn); else the one its
// token's tenant source gives, when that is exactly one; else the subject's
// synced membership, when that is exactly one. A subject with several
// tenants and no choice is not placed in any of them silently: its grant
// says TenantRequired, with no tenant.

// Placement is what a request brings to its active tenant besides the
// token's claims.
type Placement struct {
	// Named is the tenant the request names (a header, a check's tenant
	// field, forward-auth's tenant parameter); "" names none.
	Named string
	// Synced are the subject's tenants as sync last recorded them
	// (tenant_members): they place a subject whose token carries no tenant
	// claim, such as a token issued without Keycloak's organization scope.
	Synced []string
}

// TenantError refuses the tenant a request named: the subject may not act
// in it. It is a 403 wherever a request names a tenant, and audited.
type TenantError struct {
	Tenant string
	// Grant is the subject resolved without the choice, for the audit
	// entry's actor.
	Grant *Grant
	// Disabled: the subject belongs to the tenant, but the tenant is
	// disabled (its Keycloak organization disabled, or its group marked),
	// and the subject is no platform caller.
	Disabled bool
}

func (e *TenantError) Error() string {
	if e.Disabled {
		return "the caller may not act in tenant " + strconv.Quote(e.Tenant) + ": the tenant is disabled"
	}
	return "the caller may not act in tenant " + strconv.Quote(e.Tenant) + ": it is neither in the token nor a synced membership" +
		" nor a customer of an organization where the caller holds an organization-level role"
}

// TenantRequiredReason is Decide's denial for a grant with TenantRequired.
const TenantRequiredReason = "the caller may act in several tenants and the request names none: name the tenant to act in"

// MayActIn reports whether the subject may act in tenant: one its token
// places it in, or one of its synced memberships (or, for a subject in
// none, the tenant of the first matching rule that pins one), or, in a
// tenancy of organizations and customers, a customer of an organization
// where it holds an organization-level role (mapping.tenant.customers,
// organization_roles): never a customer of another organization. It is the
// one membership test of a tenant a request names; Tenants lists the same
// set.
func (g *Grant) MayActIn(tenant string) bool {
	return g != nil && tenant != "" && slices.Contains(g.Tenants, tenant)
}

// ResolveIn resolves a request's subject in its active tenant, as Resolve
// otherwise does. The tenant is p.Named when the subject may act in it;
// naming one it may not act in returns the grant without the choice and a
// *TenantError. With nothing named, the token's tenant decides when it
// gives exactly one, else the synced membership when it holds exactly one,
// else a pinned rule's tenant for a subject in none; a subject left with
// several gets TenantRequired and no tenant.
func (e *Engine) ResolveIn(f Facts, stored []Assignment, now time.Time, p Placement) (*Grant, error) {
	g, matched := e.start(&f)
	token := e.tenants(&f, &e.cfg.Claims)
	synced := slices.Clone(p.Synced)
	sort.Strings(synced)
	synced = dedupe(synced)
	all := append(slices.Clone(token), synced...)
	sort.Strings(all)
	g.Tenants = dedupe(all)
	if len(g.Tenants) == 0 {
		if t := e.pinnedTenant(matched); t != "" {
			g.Tenants = []string{t}
		}
	}
	direct := g.Tenants
	holds := e.placeInTree(g, append(slices.Clone(f.Organizations), synced...), matched, stored, now)
	switch {
	case p.Named != "":
		if !g.MayActIn(p.Named) {
			def, _ := e.ResolveIn(f, stored, now, Placement{Synced: p.Synced})
			return def, &TenantError{Tenant: p.Named, Grant: def}
		}
		g.Tenant = p.Named
	case len(token) == 1:
		g.Tenant = token[0]
	case len(token) > 1:
		g.TenantRequired = true
	case len(synced) == 1:
		g.Tenant = synced[0]
	case len(synced) > 1:
		g.TenantRequired = true
	case len(g.Tenants) == 1:
		g.Tenant = g.Tenants[0] // a pinned rule's
	}
	e.fillAt(g, &f, matched, stored, now, e.levelOf(g, direct, holds))
	return g, nil
}

// ValidTenantName checks a tenant a request names: 1 to 255 bytes of UTF-8
// without control characters. Whether the caller may act there is
// MayActIn's question.
func ValidTenantName(t string) error {
	switch {
	case t == "":
		return errors.New("tenant: empty")
	case len(t) > 255:
		return errors.New("tenant: longer than 255 bytes")
	case !utf8.ValidString(t):
		return errors.New("tenant: not valid UTF-8")
	}
	for _, r := range t {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errors.New("tenant: control characters are not allowed")
		}
	}
	return nil
}
