package sync

import (
	"sort"
	"strings"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Desired turns a snapshot into the state the store should hold. current
// is consulted only to keep an invited person invited until they act.
func Desired(s *Snapshot, e *mapping.Engine, current *store.SyncState, now time.Time) *store.SyncState {
	cfg := e.Config()
	d := &store.SyncState{}
	groups := map[string]*Group{}
	for i := range s.Groups {
		groups[s.Groups[i].ID] = &s.Groups[i]
	}
	roleByID := map[string]*Role{}
	roleByKey := map[string]*Role{}
	for i := range s.Roles {
		roleByID[s.Roles[i].ID] = &s.Roles[i]
		roleByKey[s.Roles[i].Key()] = &s.Roles[i]
	}
	userGroups := map[string][]string{}
	for gid, members := range s.GroupMembers {
		for _, u := range members {
			userGroups[u] = append(userGroups[u], gid)
		}
	}
	userRoles := map[string]map[string]bool{}
	add := func(u, roleID string) {
		if userRoles[u] == nil {
			userRoles[u] = map[string]bool{}
		}
		userRoles[u][roleID] = true
	}
	for rid, holders := range s.RoleHolders {
		for _, u := range holders {
			add(u, rid)
		}
	}
	orgsOf := map[string][]string{}
	for _, o := range s.Orgs {
		for _, u := range o.Members {
			orgsOf[u] = append(orgsOf[u], o.Alias)
		}
	}
	invited := map[string]bool{}
	if current != nil {
		for _, p := range current.People {
			if p.Status == "invited" {
				invited[p.ID] = true
			}
		}
	}

	tenantSource := "group"
	switch {
	case cfg.Tenant.Organization:
		tenantSource = "organization"
	case cfg.Tenant.Attribute != "":
		tenantSource = "attribute"
	case cfg.Tenant.Claim != "":
		tenantSource = "claim"
	}
	tenants := map[string]string{}
	for _, o := range s.Orgs {
		if cfg.Tenant.Organization {
			tenants[o.Alias] = o.Name
		}
	}

	prefix := ""
	if cfg.Tenant.GroupPrefix != "" {
		prefix = strings.TrimRight(cfg.Tenant.GroupPrefix, "/") + "/"
	}
	teamTenant := func(path string) string {
		if prefix == "" {
			return ""
		}
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok {
			return ""
		}
		t, _, _ := strings.Cut(rest, "/")
		return t
	}
	for _, g := range s.Groups {
		t := teamTenant(g.Path)
		// A tenant is named after its own group; a deeper group only
		// guarantees the tenant exists.
		if g.Path == prefix+t && t != "" {
			tenants[t] = g.Name
		} else if _, ok := tenants[t]; t != "" && !ok {
			tenants[t] = t
		}
		d.Teams = append(d.Teams, store.TeamRow{ID: g.ID, Tenant: t, Name: g.Name, Path: g.Path, ParentID: g.ParentID, Status: "active"})
	}

	for _, u := range s.Users {
		// Roles through groups: a group's mappings reach members of its
		// subgroups too.
		var paths []string
		for _, gid := range userGroups[u.ID] {
			paths = append(paths, groups[gid].Path)
			for g := groups[gid]; g != nil; g = groups[g.ParentID] {
				for _, name := range g.RealmRoles {
					if r := roleByKey[name]; r != nil {
						add(u.ID, r.ID)
					}
				}
				for client, names := range g.ClientRoles {
					for _, name := range names {
						if r := roleByKey[client+":"+name]; r != nil {
							add(u.ID, r.ID)
						}
					}
				}
			}
		}
		// Composites, transitively.
		eff := map[string]bool{}
		var stack []string
		for rid := range userRoles[u.ID] {
			stack = append(stack, rid)
		}
		for len(stack) > 0 {
			rid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if eff[rid] {
				continue
			}
			eff[rid] = true
			if r := roleByID[rid]; r != nil {
				stack = append(stack, r.Children...)
			}
		}
		f := mapping.Facts{Subject: u.ID, Username: u.Username, Email: u.Email, Groups: paths, Organizations: orgsOf[u.ID], Attributes: u.Attributes}
		var keys []string
		for rid := range eff {
			r := roleByID[rid]
			if r == nil {
				continue
			}
			if r.ClientID == "" {
				f.RealmRoles = append(f.RealmRoles, r.Name)
			} else {
				f.ClientRoles = append(f.ClientRoles, r.Key())
			}
			keys = append(keys, "keycloak|"+r.ClientID+"|"+r.Name)
		}
		sort.Strings(f.RealmRoles)
		sort.Strings(f.ClientRoles)
		sort.Strings(f.Groups)
		sort.Strings(keys)
		g := e.Resolve(f, nil, now)

		status := "active"
		switch {
		case !u.Enabled:
			status = "inactive"
		case invited[u.ID] && len(u.RequiredActions) > 0:
			status = "invited" // until the first login completes Keycloak's actions
		}
		display := strings.TrimSpace(u.FirstName + " " + u.LastName)
		if display == "" {
			display = u.Username
		}
		d.People = append(d.People, store.PersonRow{ID: u.ID, Username: u.Username, Email: u.Email, FirstName: u.FirstName,
			LastName: u.LastName, DisplayName: display, Status: status, IdentityProvider: u.IdentityProvider,
			EmailVerified: u.EmailVerified, Created: u.Created})
		for _, t := range g.Tenants {
			if _, ok := tenants[t]; !ok {
				tenants[t] = t
			}
			d.TenantMembers = append(d.TenantMembers, store.MemberRow{Group: t, Person: u.ID, Tenant: t})
		}
		for _, gid := range userGroups[u.ID] {
			d.TeamMembers = append(d.TeamMembers, store.MemberRow{Group: gid, Person: u.ID, Tenant: teamTenant(groups[gid].Path)})
		}
		for _, k := range keys {
			d.Assignments = append(d.Assignments, store.AssignmentRow{Person: u.ID, Role: k, Tenant: g.Tenant, Source: "keycloak"})
		}
		for _, name := range g.Roles {
			if r, ok := e.Role(name, g.Tenant); ok && r.Kind == "system" {
				d.Assignments = append(d.Assignments, store.AssignmentRow{Person: u.ID, Role: "system||" + name, Tenant: g.Tenant, Source: "rule"})
			}
		}
	}
	for id, name := range tenants {
		d.Tenants = append(d.Tenants, store.TenantRow{ID: id, Name: name, Source: tenantSource, Status: "active"})
	}
	for _, r := range s.Roles {
		d.Roles = append(d.Roles, store.SyncRole{Kind: "keycloak", ClientID: r.ClientID, Name: r.Name, KeycloakID: r.ID,
			Description: r.Description, Composite: r.Composite, Status: "active"})
		for _, c := range r.Children {
			if child := roleByID[c]; child != nil {
				d.Composites = append(d.Composites, store.CompositeRow{Parent: "keycloak|" + r.ClientID + "|" + r.Name, Child: "keycloak|" + child.ClientID + "|" + child.Name})
			}
		}
	}
	for _, r := range e.Roles() {
		if r.Kind != "system" && r.Kind != "pseudo" {
			continue
		}
		d.Roles = append(d.Roles, store.SyncRole{Kind: r.Kind, Name: r.Name, Description: r.Description, Status: "active",
			Permissions: strings.Join(r.Permissions, ",")})
	}
	return d
}

// Changes counts a plan by kind and operation.
type Changes map[string]map[string]int

func (c Changes) add(kind, op string, n int) {
	if n == 0 {
		return
	}
	if c[kind] == nil {
		c[kind] = map[string]int{}
	}
	c[kind][op] += n
}

// Plan is the difference between the store and the desired state.
type Plan struct {
	store.SyncPlan
	Changes Changes
	// Removed and Active count, per guarded kind, what the plan
	// deactivates against what is active now.
	Removed map[string]int
	Active  map[string]int
}

// Diff computes the plan. In additive mode nothing is deactivated or removed.
//
// People named in keep are never deactivated or stripped by this plan: they
// were written after the snapshot was read.
func Diff(cur, want *store.SyncState, additive bool, keep ...string) *Plan {
	p := &Plan{Changes: Changes{}, Removed: map[string]int{}, Active: map[string]int{}}
	kept := map[string]bool{}
	for _, id := range keep {
		kept[id] = true
	}

	// Tenants.
	curT := map[string]store.TenantRow{}
	for _, t := range cur.Tenants {
		curT[t.ID] = t
	}
	seen := map[string]bool{}
	for _, t := range want.Tenants {
		seen[t.ID] = true
		if c, ok := curT[t.ID]; !ok {
			p.Tenants = append(p.Tenants, t)
			p.Changes.add("tenants", "create", 1)
		} else if c != t {
			p.Tenants = append(p.Tenants, t)
			p.Changes.add("tenants", "update", 1)
		}
	}
	for _, t := range cur.Tenants {
		if !seen[t.ID] && t.Status != "deleted" && !additive {
			t.Status = "deleted"
			p.Tenants = append(p.Tenants, t)
			p.Changes.add("tenants", "deactivate", 1)
		}
	}

	// People: removed from Keycloak means deleted, never hard-deleted.
	curP := map[string]store.PersonRow{}
	for _, x := range cur.People {
		curP[x.ID] = x
		if x.Status != "deleted" {
			p.Active["people"]++
		}
	}
	seen = map[string]bool{}
	for _, x := range want.People {
		seen[x.ID] = true
		if c, ok := curP[x.ID]; !ok {
			p.People = append(p.People, x)
			p.Changes.add("people", "create", 1)
		} else if c != x {
			p.People = append(p.People, x)
			p.Changes.add("people", "update", 1)
		}
	}
	for _, x := range cur.People {
		if !seen[x.ID] && x.Status != "deleted" && !additive && !kept[x.ID] {
			x.Status = "deleted"
			p.People = append(p.People, x)
			p.Changes.add("people", "deactivate", 1)
			p.Removed["people"]++
		}
	}

	// Teams.
	curG := map[string]store.TeamRow{}
	for _, x := range cur.Teams {
		curG[x.ID] = x
		if x.Status != "deleted" {
			p.Active["teams"]++
		}
	}
	seen = map[string]bool{}
	for _, x := range want.Teams {
		seen[x.ID] = true
		if c, ok := curG[x.ID]; !ok {
			p.Teams = append(p.Teams, x)
			p.Changes.add("teams", "create", 1)
		} else if c != x {
			p.Teams = append(p.Teams, x)
			p.Changes.add("teams", "update", 1)
		}
	}
	for _, x := range cur.Teams {
		if !seen[x.ID] && x.Status != "deleted" && !additive {
			x.Status = "deleted"
			p.Teams = append(p.Teams, x)
			p.Changes.add("teams", "deactivate", 1)
			p.Removed["teams"]++
		}
	}

	// Roles.
	curR := map[string]store.SyncRole{}
	for _, x := range cur.Roles {
		curR[x.Key()] = x
		if x.Status != "deleted" && x.Kind == "keycloak" {
			p.Active["roles"]++
		}
	}
	seen = map[string]bool{}
	for _, x := range want.Roles {
		seen[x.Key()] = true
		c, ok := curR[x.Key()]
		cmp := c
		cmp.Permissions = x.Permissions
		switch {
		case !ok:
			p.Roles = append(p.Roles, x)
			p.Changes.add("roles", "create", 1)
		case cmp != x:
			p.Roles = append(p.Roles, x)
			p.Changes.add("roles", "update", 1)
		}
		if (x.Kind == "system" || x.Kind == "pseudo") && (!ok || c.Permissions != x.Permissions) {
			p.PermissionChanges = append(p.PermissionChanges, x)
			p.Changes.add("role_permissions", "update", 1)
		}
	}
	for _, x := range cur.Roles {
		if !seen[x.Key()] && x.Status != "deleted" && !additive {
			x.Status = "deleted"
			p.Roles = append(p.Roles, x)
			p.Changes.add("roles", "deactivate", 1)
			if x.Kind == "keycloak" {
				p.Removed["roles"]++
			}
		}
	}

	p.AddTenantMembers, p.DelTenantMembers = setDiff(cur.TenantMembers, want.TenantMembers, func(m store.MemberRow) string { return m.Group + "\x00" + m.Person })
	p.AddTeamMembers, p.DelTeamMembers = setDiff(cur.TeamMembers, want.TeamMembers, func(m store.MemberRow) string { return m.Group + "\x00" + m.Person + "\x00" + m.Tenant })
	p.AddComposites, p.DelComposites = setDiff(cur.Composites, want.Composites, func(c store.CompositeRow) string { return c.Parent + "\x00" + c.Child })
	p.AddAssignments, p.DelAssignments = setDiff(cur.Assignments, want.Assignments, func(a store.AssignmentRow) string {
		return a.Person + "\x00" + a.Role + "\x00" + a.Tenant + "\x00" + a.Source + "\x00" + a.Ref
	})
	unkept := func(m store.MemberRow) bool { return !kept[m.Person] }
	p.DelTenantMembers = filter(p.DelTenantMembers, unkept)
	p.DelTeamMembers = filter(p.DelTeamMembers, unkept)
	p.DelAssignments = filter(p.DelAssignments, func(a store.AssignmentRow) bool { return !kept[a.Person] })
	// A team membership whose tenant changed is an update, not a removal.
	p.DelTeamMembers = subtract(p.DelTeamMembers, p.AddTeamMembers, func(m store.MemberRow) string { return m.Group + "\x00" + m.Person })
	if additive {
		p.DelTenantMembers, p.DelTeamMembers, p.DelComposites, p.DelAssignments = nil, nil, nil, nil
	}
	p.Changes.add("tenant_members", "create", len(p.AddTenantMembers))
	p.Changes.add("tenant_members", "delete", len(p.DelTenantMembers))
	p.Changes.add("team_members", "create", len(p.AddTeamMembers))
	p.Changes.add("team_members", "delete", len(p.DelTeamMembers))
	p.Changes.add("role_composites", "create", len(p.AddComposites))
	p.Changes.add("role_composites", "delete", len(p.DelComposites))
	p.Changes.add("assignments", "create", len(p.AddAssignments))
	p.Changes.add("assignments", "delete", len(p.DelAssignments))
	return p
}

func setDiff[T any](cur, want []T, key func(T) string) (add, del []T) {
	c := map[string]bool{}
	for _, x := range cur {
		c[key(x)] = true
	}
	w := map[string]bool{}
	for _, x := range want {
		k := key(x)
		if w[k] {
			continue
		}
		w[k] = true
		if !c[k] {
			add = append(add, x)
		}
	}
	for _, x := range cur {
		if !w[key(x)] {
			del = append(del, x)
		}
	}
	return add, del
}

func subtract[T any](from, remove []T, key func(T) string) []T {
	r := map[string]bool{}
	for _, x := range remove {
		r[key(x)] = true
	}
	var out []T
	for _, x := range from {
		if !r[key(x)] {
			out = append(out, x)
		}
	}
	return out
}

func filter[T any](in []T, keep func(T) bool) []T {
	var out []T
	for _, x := range in {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}
