package mapping

import (
	"fmt"
	"strings"
	"time"
)

// Resource is what a check is about.
type Resource struct {
	Type   string `json:"type,omitempty"`
	ID     string `json:"id,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// Request asks whether any of the permissions is granted on the resource.
type Request struct {
	AnyOf    []string
	Resource Resource
	Now      time.Time
}

// Decision is an answer that explains itself.
type Decision struct {
	Allowed    bool   `json:"allowed"`
	Permission string `json:"permission,omitempty"` // the one that matched
	Reason     string `json:"reason"`
	Role       string `json:"role,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Grant      string `json:"grant,omitempty"`
}

const ownedSuffix = ".owned"

// Decide answers a request for a grant. The allow path allocates nothing:
// every reason it returns was written by Resolve.
func (e *Engine) Decide(g *Grant, req Request) Decision {
	if len(req.AnyOf) == 0 {
		return Decision{Reason: "no permission named in the request"}
	}
	if g == nil {
		return Decision{Reason: "no grant"}
	}
	crossTenant := req.Resource.Tenant != "" && req.Resource.Tenant != g.Tenant
	if crossTenant && g.bypass != "global" {
		return Decision{Reason: crossTenantReason(req.Resource.Tenant, g.Tenant)}
	}
	var denial string
	for _, p := range req.AnyOf {
		if pol, blocked := e.policyBlocks(g, p); blocked {
			if denial == "" {
				denial = p + " requires role " + pol.RequireRole + " (policy for " + pol.Prefix + "*)"
			}
			continue
		}
		switch g.bypass {
		case "global":
			return Decision{Allowed: true, Permission: p, Role: g.bypassR, Reason: bypassGlobalReason}
		case "tenant":
			if e.known[p] {
				return Decision{Allowed: true, Permission: p, Role: g.bypassR, Reason: bypassTenantReason}
			}
		}
		if strings.HasSuffix(p, ownedSuffix) && (req.Resource.Owner == "" || req.Resource.Owner != g.Subject) {
			if denial == "" && g.Has(p, req.Now) {
				denial = fmt.Sprintf("%q requires the caller to own the resource", p)
			}
			continue
		}
		for _, s := range g.perms[p] {
			if s.expires.IsZero() || req.Now.Before(s.expires) {
				return Decision{Allowed: true, Permission: p, Reason: s.reason, Role: s.role, Rule: s.rule, Grant: s.grant}
			}
		}
	}
	if denial == "" {
		denial = fmt.Sprintf("no role, rule or grant gives any of %v", req.AnyOf)
		for _, p := range req.AnyOf {
			if !e.known[p] {
				denial = fmt.Sprintf("%q is not in the %s catalog", p, e.preset)
				break
			}
			for _, s := range g.perms[p] {
				if !s.expires.IsZero() && !req.Now.Before(s.expires) {
					denial = fmt.Sprintf("%q was granted until %s (%s), which has passed", p, s.expires.UTC().Format(time.RFC3339), s.grant)
				}
			}
		}
	}
	return Decision{Reason: denial}
}

const (
	bypassGlobalReason = "bypass role passes every check everywhere"
	bypassTenantReason = "bypass role passes every check inside its own tenant"
)

func crossTenantReason(resource, caller string) string {
	if caller == "" {
		return fmt.Sprintf("resource tenant %q differs from the caller, who has no tenant", resource)
	}
	return fmt.Sprintf("resource tenant %q differs from caller tenant %q", resource, caller)
}

func (e *Engine) policyBlocks(g *Grant, p string) (Policy, bool) {
	for _, pol := range e.policies {
		if strings.HasPrefix(p, pol.Prefix) && !g.roles[pol.RequireRole] {
			return pol, true
		}
	}
	return Policy{}, false
}
