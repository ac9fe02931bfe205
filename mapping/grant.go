package mapping

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Facts are what is known about a subject, from sync or from a token.
type Facts struct {
	Subject       string
	Username      string
	Email         string
	RealmRoles    []string            // effective: composites and group roles expanded
	ClientRoles   []string            // "client:role"
	Groups        []string            // full paths
	Organizations []string            // aliases
	Attributes    map[string][]string // user attributes
	Claims        map[string]any      // raw claims at request time; nil at sync time
}

// Assignment is a stored grant: from sync (keycloak, rule), or made in
// keybridge (local), possibly temporary.
type Assignment struct {
	Role       string
	Permission string
	Tenant     string
	Source     string
	ExpiresAt  time.Time // zero: never
	Ref        string
}

// source explains where a permission came from; reason is precomputed so
// the allow path of Decide formats nothing.
type source struct {
	role, rule, grant string
	expires           time.Time
	reason            string
}

// Grant is a resolved subject: what it may do, and why.
type Grant struct {
	Subject     string   `json:"subject"`
	Username    string   `json:"username,omitempty"`
	Tenant      string   `json:"tenant,omitempty"`
	Tenants     []string `json:"tenants,omitempty"`
	Roles       []string `json:"roles"`
	Permissions []string `json:"permissions"`
	Teams       []string `json:"teams"`

	perms   map[string][]source // permission -> sources (several when temporary)
	roles   map[string]bool
	bypass  string // "", tenant, global
	bypassR string
	primary string
}

// PrimaryRole is the highest role held, by the preset's order: app.role.
func (g *Grant) PrimaryRole() string { return g.primary }

// Global reports a global-bypass role (PlatformAdmin): app.platform.
func (g *Grant) Global() bool { return g.bypass == "global" }

// HasRole reports whether the grant holds a role.
func (g *Grant) HasRole(name string) bool { return g.roles[name] }

// Has reports whether a permission is granted at now (bypass aside).
func (g *Grant) Has(p string, now time.Time) bool {
	for _, s := range g.perms[p] {
		if s.expires.IsZero() || now.Before(s.expires) {
			return true
		}
	}
	return false
}

// Resolve applies the rules to the facts, adds stored assignments and
// pseudo roles, and returns the grant. Assignments already expired at now
// are left out; those still running carry their expiry, which Decide checks
// against the request's time.
func (e *Engine) Resolve(f Facts, stored []Assignment, now time.Time) *Grant {
	g := &Grant{Subject: f.Subject, Username: f.Username, perms: map[string][]source{}, roles: map[string]bool{}}
	g.Tenants = e.tenants(f)
	if len(g.Tenants) > 0 {
		g.Tenant = g.Tenants[0]
	}
	g.Teams = append([]string{}, f.Groups...)
	sort.Strings(g.Teams)

	addRole := func(name string, src source) {
		r, ok := e.Role(name, g.Tenant)
		if !ok {
			return
		}
		if src.expires.IsZero() {
			g.roles[r.Name] = true
		}
		src.role = r.Name
		for _, p := range r.Permissions {
			s := src
			s.reason = explainAllow(p, s)
			g.perms[p] = append(g.perms[p], s)
		}
		if r.Bypass != "" && src.expires.IsZero() && (g.bypass == "" || r.Bypass == "global") {
			g.bypass, g.bypassR = r.Bypass, r.Name
		}
	}
	addPerm := func(p string, src source) {
		if !e.known[p] {
			return
		}
		src.reason = explainAllow(p, src)
		g.perms[p] = append(g.perms[p], src)
	}

	for i := range e.rules {
		r := &e.rules[i]
		if r.Tenant != "" && r.Tenant != g.Tenant {
			continue
		}
		if !r.matches(f) {
			continue
		}
		for _, name := range r.grants {
			addRole(name, source{rule: r.ref})
		}
		for _, p := range r.perms {
			addPerm(p, source{rule: r.ref})
		}
	}
	for _, a := range stored {
		if !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt) {
			continue
		}
		if a.Tenant != "" && a.Tenant != g.Tenant {
			continue
		}
		src := source{grant: a.Ref, expires: a.ExpiresAt}
		if src.grant == "" {
			src.grant = a.Source + " assignment"
		}
		if a.Role != "" {
			addRole(a.Role, src)
			if !a.ExpiresAt.IsZero() {
				g.roles[a.Role] = true // shown while it runs; Decide checks expiry
			}
		}
		if a.Permission != "" {
			addPerm(a.Permission, src)
		}
	}
	if e.authn != "" && f.Subject != "" {
		addRole(e.authn, source{rule: "every verified token"})
	}
	return e.finish(g, now)
}

func (e *Engine) finish(g *Grant, now time.Time) *Grant {
	for name := range g.roles {
		g.Roles = append(g.Roles, name)
	}
	sort.Slice(g.Roles, func(i, j int) bool {
		ri, rj := e.rankOf(g.Roles[i]), e.rankOf(g.Roles[j])
		if ri != rj {
			return ri < rj
		}
		return g.Roles[i] < g.Roles[j]
	})
	if len(g.Roles) > 0 {
		g.primary = g.Roles[0]
	}
	g.Permissions = []string{}
	for p := range g.perms {
		if g.Has(p, now) {
			g.Permissions = append(g.Permissions, p)
		}
	}
	sort.Strings(g.Permissions)
	return g
}

func (e *Engine) rankOf(role string) int {
	if r, ok := e.rank[role]; ok {
		return r
	}
	return len(e.rank) // custom roles after system, before pseudo is not needed
}

// Anonymous is the grant of a caller without a token: the Public pseudo role.
func (e *Engine) Anonymous() *Grant {
	g := &Grant{perms: map[string][]source{}, roles: map[string]bool{}}
	if e.public != "" {
		g.roles[e.public] = true
		for _, p := range e.roles[e.public].Permissions {
			s := source{role: e.public}
			s.reason = explainAllow(p, s)
			g.perms[p] = append(g.perms[p], s)
		}
	}
	return e.finish(g, time.Time{})
}

func explainAllow(p string, s source) string {
	var b strings.Builder
	fmt.Fprintf(&b, "permission %q granted", p)
	if s.role != "" {
		fmt.Fprintf(&b, " by role %q", s.role)
	}
	switch {
	case s.rule != "":
		fmt.Fprintf(&b, " (%s)", s.rule)
	case s.grant != "":
		fmt.Fprintf(&b, " (%s", s.grant)
		if !s.expires.IsZero() {
			fmt.Fprintf(&b, ", until %s", s.expires.UTC().Format(time.RFC3339))
		}
		b.WriteString(")")
	}
	return b.String()
}

// tenants lists the subject's tenants by the configured source, sorted.
func (e *Engine) tenants(f Facts) []string {
	ts := e.cfg.Tenant
	var out []string
	switch {
	case ts.Organization:
		out = append(out, f.Organizations...)
	case ts.GroupPrefix != "":
		prefix := strings.TrimRight(ts.GroupPrefix, "/") + "/"
		for _, g := range f.Groups {
			if rest, ok := strings.CutPrefix(g, prefix); ok {
				if t, _, _ := strings.Cut(rest, "/"); t != "" {
					out = append(out, t)
				}
			}
		}
	case ts.Attribute != "":
		out = append(out, f.Attributes[ts.Attribute]...)
	case ts.Claim != "":
		if f.Claims != nil {
			out = append(out, strings_(lookup(f.Claims, ts.Claim))...)
		} else {
			out = append(out, f.Attributes[ts.Claim]...)
		}
	}
	sort.Strings(out)
	return dedupe(out)
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if v != "" && (i == 0 || v != s[i-1]) {
			out = append(out, v)
		}
	}
	return out
}

func (r *compiledRule) matches(f Facts) bool {
	switch {
	case r.RealmRole != "":
		return contains(f.RealmRoles, r.RealmRole)
	case r.ClientRole != "":
		return contains(f.ClientRoles, r.ClientRole)
	case r.Organization != "":
		return contains(f.Organizations, r.Organization)
	case r.Group != "":
		for _, g := range f.Groups {
			if matchGlob(r.group, g) {
				return true
			}
		}
		return false
	case r.Claim != "":
		var vals []string
		if f.Claims != nil {
			v := lookup(f.Claims, r.Claim)
			if v == nil {
				return false
			}
			vals = strings_(v)
		} else {
			var ok bool
			if vals, ok = f.Attributes[r.Claim]; !ok {
				return false
			}
		}
		return matchValues(vals, r.Equals, r.In, r.regex)
	}
	return false
}

func matchValues(vals []string, equals *string, in []string, re *regexp.Regexp) bool {
	if equals == nil && len(in) == 0 && re == nil {
		return true // presence
	}
	for _, v := range vals {
		switch {
		case equals != nil && v == *equals:
			return true
		case len(in) > 0 && contains(in, v):
			return true
		case re != nil && re.MatchString(v):
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
