package mapping

import (
	"fmt"
	"slices"
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
// Order of checks: a grant without the tenant it must act in
// (TenantRequired) is denied; a resource in another tenant is denied unless a global
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
	if g.TenantRequired {
		return Decision{Reason: TenantRequiredReason}
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
	if e.public != nil && g.Subject == "" && slices.Contains(g.Roles, e.public.Name) {
		// Anonymous (check.allow_anonymous): say which role was evaluated.
		s += fmt.Sprintf(" to an anonymous caller, who holds only the pseudo role %s", e.public.Name)
	}
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

// MayGrantUntil is the grant ceiling for assignments, the one every path
// that creates, changes or removes an assignment applies (the management
// API, the CLI through the same service, invitations and their teams): the
// caller may give role r in tenant, lasting until expires (zero: for good),
// only if MayGrant allows it now and the caller will still hold everything
// it needs for as long as the assignment lasts. So a caller grants for good
// only what it holds for good (every permission and bypass the role needs
// held by a lasting source, not a temporary assignment); a temporary holder
// grants only temporary assignments ending no later than its own (the
// earliest expiry among the sources it needs). Otherwise a temporary grant
// could make itself, or someone else, permanent. It returns "" when
// allowed, else why not.
func (e *Engine) MayGrantUntil(g *Grant, r Role, tenant string, expires, now time.Time) string {
	if why := e.MayGrant(g, r, tenant, now); why != "" {
		return why
	}
	// Sources only ever end, so what is held at the assignment's last
	// instant is held all the way there.
	last := endOfTime
	if !expires.IsZero() {
		if !expires.After(now) {
			return fmt.Sprintf("role %s: expiry %s is not in the future", r.Name, expires.UTC().Format(time.RFC3339))
		}
		last = expires.Add(-time.Nanosecond)
	}
	if e.MayGrant(g, r, tenant, last) == "" {
		return ""
	}
	until := e.heldUntil(g, r, tenant, now)
	at := until.UTC().Format(time.RFC3339)
	if expires.IsZero() {
		return fmt.Sprintf("role %s: you hold what it carries only until %s, through a temporary grant; you may grant it only with an expiry no later than that", r.Name, at)
	}
	return fmt.Sprintf("role %s: expiry %s is after %s, when your own temporary grant of what it carries ends", r.Name, expires.UTC().Format(time.RFC3339), at)
}

// MayGrantHeld applies MayGrantUntil to everything held would give in
// tenant, as one grant lasting until expires: each of its roles (a bypass
// included), then the permissions rules give directly. It judges what a
// set of facts grants someone, such as an invitation's Keycloak groups
// with the roles they map to and the group rules that match them. held
// should be resolved without a subject, so the Authenticated pseudo role
// (which nobody grants) is not in it.
func (e *Engine) MayGrantHeld(g, held *Grant, tenant string, expires, now time.Time) string {
	if held == nil {
		return ""
	}
	carried := map[string]bool{}
	for _, name := range held.Roles {
		r, ok := e.Role(name, tenant)
		if !ok || r.Kind == KindPseudo {
			continue
		}
		if why := e.MayGrantUntil(g, r, tenant, expires, now); why != "" {
			return why
		}
		for _, p := range r.Permissions {
			carried[p] = true
		}
	}
	direct := Role{Name: "(permissions granted directly by rules)"}
	for _, p := range held.Permissions {
		if !carried[p] {
			direct.Permissions = append(direct.Permissions, p)
		}
	}
	if len(direct.Permissions) == 0 {
		return ""
	}
	return e.MayGrantUntil(g, direct, tenant, expires, now)
}

// endOfTime is later than any expiry: only lasting sources count there.
var endOfTime = time.Unix(1<<62, 0)

// heldUntil is the instant the caller stops being able to grant r: the
// first expiry of a temporary source after which MayGrant refuses. Called
// only when r is grantable at now and not for good.
func (e *Engine) heldUntil(g *Grant, r Role, tenant string, now time.Time) time.Time {
	var ends []time.Time
	add := func(s *source) {
		if s != nil && !s.until.IsZero() && s.until.After(now) {
			ends = append(ends, s.until)
		}
	}
	for _, hs := range g.holds {
		for i := range hs {
			add(hs[i].src)
		}
	}
	for _, s := range g.policy {
		add(s)
	}
	add(g.global.src)
	add(g.tenant.src)
	slices.SortFunc(ends, time.Time.Compare)
	for _, t := range ends {
		if e.MayGrant(g, r, tenant, t) != "" {
			return t
		}
	}
	return endOfTime
}
