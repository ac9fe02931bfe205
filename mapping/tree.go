package mapping

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Tenancy of two levels (DESIGN.md, "Data model"; mapping.tenant.customers):
// Keycloak organizations hold customers. A subject is in an organization as
// its Keycloak member, and in a customer as a member of the customer's group
// (or a group below it). A role of OrganizationRoles held in an organization
// holds in each of its customers too, so the subject may act there; every
// other role, and every role held in a customer, stays where it is held.
// Which customers an organization holds is Keycloak data too (the customer
// group's keybridge.tenant.organization attribute), stored by sync
// (tenants.org_id) and handed to the engine as a TenantTree by the
// directory (WithTenantTree).

// TenantTree is the organization -> customers tree as sync last stored it:
// which tenants are organizations, and each customer's organization. It
// never changes after NewTenantTree.
type TenantTree struct {
	customers map[string][]string // organization -> its customers, sorted
	org       map[string]string   // customer -> its organization
}

// NewTenantTree builds the tree from the organizations and each customer's
// organization. A customer whose organization is not among orgs, or which
// is itself an organization, belongs to none.
func NewTenantTree(orgs []string, customerOrg map[string]string) *TenantTree {
	t := &TenantTree{customers: make(map[string][]string, len(orgs)), org: map[string]string{}}
	for _, o := range orgs {
		if o != "" && t.customers[o] == nil {
			t.customers[o] = []string{}
		}
	}
	for c, o := range customerOrg {
		if _, isOrg := t.customers[c]; isOrg || c == "" || c == o {
			continue
		}
		if cs, ok := t.customers[o]; ok {
			t.customers[o] = append(cs, c)
			t.org[c] = o
		}
	}
	for _, cs := range t.customers {
		sort.Strings(cs)
	}
	return t
}

// IsOrganization reports whether the tenant is an organization.
func (t *TenantTree) IsOrganization(tenant string) bool {
	if t == nil {
		return false
	}
	_, ok := t.customers[tenant]
	return ok
}

// Organization is the organization a customer belongs to, or "".
func (t *TenantTree) Organization(customer string) string {
	if t == nil {
		return ""
	}
	return t.org[customer]
}

// Customers lists an organization's customers, sorted.
func (t *TenantTree) Customers(org string) []string {
	if t == nil {
		return nil
	}
	return slices.Clone(t.customers[org])
}

// WithTenantTree returns an engine that places subjects with the tree. It
// changes nothing for a flat tenancy (no mapping.tenant.customers).
func (e *Engine) WithTenantTree(t *TenantTree) *Engine {
	n := *e
	n.tree = t
	return &n
}

// OrganizationRoles lists the roles that, held in an organization, hold in
// each of its customers, sorted; none for a flat tenancy.
func (e *Engine) OrganizationRoles() []string {
	out := make([]string, 0, len(e.orgRoles))
	for name := range e.orgRoles {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// compileTree validates mapping.tenant.customers and organization_roles and
// the preset's organization_roles, and returns the organization-level roles
// of a tree (nil for a flat tenancy).
func compileTree(ts TenantSource, p *presetFile, roles map[string]*role, add func(key, format string, args ...any)) map[string]bool {
	system := func(key string, names []string) map[string]bool {
		out := map[string]bool{}
		for i, n := range names {
			if r, ok := roles[n]; !ok || r.Kind != KindSystem {
				add(fmt.Sprintf("%s[%d]", key, i), "%q is not a system role of preset %s", n, p.Name)
				continue
			}
			out[n] = true
		}
		return out
	}
	preset := system("preset "+p.Name+" organization_roles", p.OrganizationRoles)
	if c := ts.Customers; c != (CustomerSource{}) {
		if !ts.Organization {
			add("mapping.tenant.customers", "customers belong to Keycloak organizations: set mapping.tenant.organization: true beside it")
		}
		if !strings.HasPrefix(c.GroupPrefix, "/") || strings.Contains(c.GroupPrefix, "*") {
			add("mapping.tenant.customers.group_prefix", "%q must be a group path starting with /, such as /customers", c.GroupPrefix)
		}
	}
	if !ts.Tree() {
		if ts.OrganizationRoles != nil {
			add("mapping.tenant.organization_roles", "applies to a tree of organizations and customers only: set mapping.tenant.customers beside organization: true")
		}
		return nil
	}
	if ts.OrganizationRoles != nil {
		return system("mapping.tenant.organization_roles", ts.OrganizationRoles)
	}
	return preset
}

// orgHold is what a subject holds at the organization level in one
// organization: the organization-level roles, each with why.
type orgHold struct {
	org   string
	roles []*role
	srcs  []*source
}

// level is where the active tenant sits for fill: reachOnly when the
// subject acts in a customer only through an organization-level role (it
// is not a member), and up, the organization-level roles that hold there.
type level struct {
	reachOnly bool
	up        *orgHold
}

// reach finds, for each of the subject's organizations, the
// organization-level roles it holds there: from the matched rules not
// pinned to another tenant and from the stored assignments made there or
// everywhere, unexpired at now. Organizations where it holds none are left
// out: they reach no customer.
func (e *Engine) reach(orgs []string, matched []bool, stored []Assignment, now time.Time) map[string]*orgHold {
	var out map[string]*orgHold
	for _, o := range orgs {
		if !e.tree.IsOrganization(o) {
			continue
		}
		h := &orgHold{org: o}
		in := " held in organization " + strconv.Quote(o)
		for i := range e.rules {
			r := &e.rules[i]
			if !matched[i] || (r.tenant != "" && r.tenant != o) {
				continue
			}
			for _, name := range r.roles {
				if e.orgRoles[name] {
					h.roles = append(h.roles, e.roles[name])
					h.srcs = append(h.srcs, &source{rule: r.ref + "," + in})
				}
			}
		}
		for _, a := range stored {
			if !e.orgRoles[a.Role] || (a.Tenant != "" && a.Tenant != o) || (!a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt)) {
				continue
			}
			ref := a.Ref
			if ref == "" {
				ref = strings.TrimSpace(a.Source + " assignment")
			}
			h.roles = append(h.roles, e.roles[a.Role])
			h.srcs = append(h.srcs, &source{grant: ref + in, until: a.ExpiresAt})
		}
		if len(h.roles) > 0 {
			if out == nil {
				out = map[string]*orgHold{}
			}
			out[o] = h
		}
	}
	return out
}

// placeInTree extends g.Tenants (the tenants the subject is in itself)
// with the customers it reaches through organization-level roles held in
// orgs, its organizations by token or synced membership (tenants the tree
// does not know as organizations are skipped); it returns the holds by
// organization.
func (e *Engine) placeInTree(g *Grant, orgs []string, matched []bool, stored []Assignment, now time.Time) map[string]*orgHold {
	if e.orgRoles == nil || e.tree == nil {
		return nil
	}
	holds := e.reach(orgs, matched, stored, now)
	if len(holds) == 0 {
		return nil
	}
	all := slices.Clone(g.Tenants)
	for o := range holds {
		all = append(all, e.tree.customers[o]...)
	}
	sort.Strings(all)
	g.Tenants = dedupe(all)
	return holds
}

// levelOf sets g.Org and g.Customers for the active tenant and says how
// fill grants there. Acting in an organization: app.org_id is that
// organization, and a holder of an organization-level role there may read
// every customer (app.tenant_ids). Acting in a customer through an
// organization-level role: app.org_id is the customer's organization. A
// subject confined to a customer gets neither.
func (e *Engine) levelOf(g *Grant, direct []string, holds map[string]*orgHold) *level {
	lv := &level{reachOnly: g.Tenant != "" && !slices.Contains(direct, g.Tenant)}
	if e.orgRoles == nil || g.Tenant == "" {
		return lv
	}
	if e.tree.IsOrganization(g.Tenant) {
		g.Org = g.Tenant
		if holds[g.Tenant] != nil {
			g.Customers = e.tree.Customers(g.Tenant)
		}
		return lv
	}
	if o := e.tree.Organization(g.Tenant); o != "" && holds[o] != nil {
		g.Org = o
		lv.up = holds[o]
	}
	return lv
}
