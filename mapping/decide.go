package mapping

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Resource is what a check is about.
type Resource struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Owner  string `json:"owner"`  // subject that owns it, for .owned permissions
	Tenant string `json:"tenant"` // "" means the caller's own tenant
}

// Request asks whether any of the permissions is granted on the resource at
// Now.
type Request struct {
	AnyOf    []string
	Resource Resource
	Now      time.Time
}

// Decision is an answer that explains itself.
type Decision struct {
	Allowed    bool   `json:"allowed"`
	Permission string `json:"permission,omitempty"` // the one that passed
	Reason     string `json:"reason"`
	Role       string `json:"role,omitempty"`  // the role that carried it
	Rule       string `json:"rule,omitempty"`  // the rule that granted that role or permission
	Grant      string `json:"grant,omitempty"` // the stored or temporary assignment that did
}

const ownedSuffix = ".owned"

// Decide answers a request for a grant. It allocates nothing on the allow
// path, every reason it returns there having been written by Resolve, so it
// can sit in front of every request.
//
// Order of checks: a resource in another tenant is denied unless a global
// bypass role is held; a name outside the catalog is skipped; a policy
// (platform.* behind PlatformAdmin) skips permissions whose role the caller
// lacks, bypass or not; a bypass role then passes; a .owned permission needs
// the caller to own the resource; then any held permission passes.
func (e *Engine) Decide(g *Grant, req Request) Decision {
	if len(req.AnyOf) == 0 {
		return Decision{Reason: "the request names no permission: give at least one"}
	}
	if g == nil || g.idx == nil {
		return Decision{Reason: "no resolved grant for the caller"}
	}
	x := g.idx
	global := g.global.src != nil && g.global.src.active(req.Now)
	if req.Resource.Tenant != "" && req.Resource.Tenant != g.Tenant && !global {
		return Decision{Reason: crossTenantReason(req.Resource.Tenant, g.Tenant)}
	}
	tenant := g.tenant.src != nil && g.tenant.src.active(req.Now)
	for _, p := range req.AnyOf {
		id, ok := x.ids[p]
		if !ok {
			continue
		}
		if k := x.policy[id]; k >= 0 && (g.policy[k] == nil || !g.policy[k].active(req.Now)) {
			continue
		}
		switch {
		case global:
			return g.global.decision(p, id)
		case tenant:
			return g.tenant.decision(p, id)
		}
		if x.owned[id] && (req.Resource.Owner == "" || req.Resource.Owner != g.Subject) {
			continue
		}
		if h := g.hasID(id, req.Now); h != nil {
			return Decision{Allowed: true, Permission: p, Reason: h.reason, Role: h.src.role, Rule: h.src.rule, Grant: h.src.grant}
		}
	}
	return Decision{Reason: e.denial(g, req)}
}

func (b *bypass) decision(p string, id int32) Decision {
	return Decision{Allowed: true, Permission: p, Reason: b.why[id], Role: b.src.role, Rule: b.src.rule, Grant: b.src.grant}
}

// denial says which requirement failed. It runs only when nothing passed,
// so it may take its time: the most specific reason wins (a policy, an
// ownership check, an expired grant), then "no role grants any of".
func (e *Engine) denial(g *Grant, req Request) string {
	x := g.idx
	var unknown []string
	for _, p := range req.AnyOf {
		id, ok := x.ids[p]
		if !ok {
			unknown = append(unknown, strconv.Quote(p))
			continue
		}
		if k := x.policy[id]; k >= 0 && (g.policy[k] == nil || !g.policy[k].active(req.Now)) {
			pol := x.policies[k]
			return fmt.Sprintf("%q: %s* requires role %s", p, pol.Prefix, pol.RequireRole)
		}
		if x.owned[id] && g.hasID(id, req.Now) != nil {
			if req.Resource.Owner == "" {
				return fmt.Sprintf("%q requires the caller to own the resource, and the request names no owner", p)
			}
			return fmt.Sprintf("%q requires the caller to own the resource (owner %q, caller %q)", p, req.Resource.Owner, g.Subject)
		}
		for _, h := range g.holds[id] {
			if !h.src.active(req.Now) {
				return fmt.Sprintf("%q was granted until %s (%s), which has passed", p, h.src.until.UTC().Format(time.RFC3339), h.src.grant)
			}
		}
	}
	if len(unknown) == len(req.AnyOf) {
		return fmt.Sprintf("%s not in the %s catalog", strings.Join(unknown, ", ")+isAre(len(unknown)), x.preset)
	}
	s := fmt.Sprintf("no role grants any of %v", req.AnyOf)
	if len(unknown) > 0 {
		s += fmt.Sprintf(" (%s not in the %s catalog)", strings.Join(unknown, ", ")+isAre(len(unknown)), x.preset)
	}
	return s
}

func isAre(n int) string {
	if n == 1 {
		return " is"
	}
	return " are"
}

func crossTenantReason(resource, caller string) string {
	if caller == "" {
		return fmt.Sprintf("resource tenant %q differs from caller tenant \"\" (the caller is in no tenant)", resource)
	}
	return fmt.Sprintf("resource tenant %q differs from caller tenant %q", resource, caller)
}

// MayGrant says whether the caller may give a role to someone in tenant,
// or put permissions into a custom role there: only what the caller may do
// there itself, and never a bypass wider than its own. Otherwise a tenant
// administrator could make anyone, themselves included, a PlatformAdmin, or
// write a custom role holding what they lack. It returns "" when allowed,
// else why not.
func (e *Engine) MayGrant(g *Grant, r Role, tenant string, now time.Time) string {
	if g == nil || g.idx == nil {
		return "no resolved grant for the caller"
	}
	global := g.global.src != nil && g.global.src.active(now)
	switch {
	case r.Bypass == BypassGlobal && !global:
		return fmt.Sprintf("role %s passes every check in every tenant; only a holder of such a role may grant it", r.Name)
	case r.Bypass == BypassTenant && !global && (g.tenant.src == nil || !g.tenant.src.active(now)):
		return fmt.Sprintf("role %s passes every check in its tenant; only a holder of such a role may grant it", r.Name)
	}
	for _, p := range r.Permissions {
		d := e.Decide(g, Request{AnyOf: []string{p}, Resource: Resource{Tenant: tenant, Owner: g.Subject}, Now: now})
		if !d.Allowed {
			return fmt.Sprintf("role %s carries %q, which you may not use in tenant %q; you can grant only what you hold", r.Name, p, tenant)
		}
	}
	return ""
}
