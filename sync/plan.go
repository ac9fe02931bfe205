package sync

import (
	"cmp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Desired turns a snapshot into the state the store should hold. current
// is consulted only to keep an invited person invited until they act.
//
// Rows share their strings: a role's key, a group's id and tenant, a
// person's id are each held once however many rows name them.
func Desired(s *Snapshot, e *mapping.Engine, current *store.SyncState, now time.Time) *store.SyncState {
	cfg := e.Config()
	d := &store.SyncState{}
	groupAt := make(map[string]int32, len(s.Groups))
	for i := range s.Groups {
		groupAt[s.Groups[i].ID] = int32(i)
	}
	roleAt := make(map[string]int32, len(s.Roles))
	roleByKey := make(map[string]int32, len(s.Roles))
	keys := make([]string, len(s.Roles)) // "keycloak|client|name", as rows name roles
	for i := range s.Roles {
		r := &s.Roles[i]
		roleAt[r.ID] = int32(i)
		roleByKey[r.Key()] = int32(i)
		keys[i] = "keycloak|" + r.ClientID + "|" + r.Name
	}
	children := make([][]int32, len(s.Roles))
	for i := range s.Roles {
		for _, c := range s.Roles[i].Children {
			if j, ok := roleAt[c]; ok {
				children[i] = append(children[i], j)
			}
		}
	}
	// The roles a group gives its members: its own mappings and every
	// ancestor's (a group's mappings reach members of its subgroups).
	groupRoles := make([][]int32, len(s.Groups))
	for i := range s.Groups {
		steps := 0
		for g := int32(i); g >= 0 && steps <= len(s.Groups); steps++ {
			grp := &s.Groups[g]
			for _, name := range grp.RealmRoles {
				if r, ok := roleByKey[name]; ok {
					groupRoles[i] = append(groupRoles[i], r)
				}
			}
			for client, names := range grp.ClientRoles {
				for _, name := range names {
					if r, ok := roleByKey[client+":"+name]; ok {
						groupRoles[i] = append(groupRoles[i], r)
					}
				}
			}
			p, ok := groupAt[grp.ParentID]
			if !ok {
				break
			}
			g = p
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
	// Issue 16: the Keycloak object a tenant comes from (KeycloakID) and
	// whether it is disabled there (Status), by tenant id.
	fromKC := map[string]store.TenantRow{}
	for _, o := range s.Orgs {
		if cfg.Tenant.Organization {
			tenants[o.Alias] = o.Name
			fromKC[o.Alias] = store.TenantRow{KeycloakID: o.ID, Status: tenantStatus(o.Enabled != nil && !*o.Enabled)}
		}
	}

	prefix := ""
	if gp := cfg.Tenant.TenantGroupPrefix(); gp != "" { // customers.group_prefix in a tenant tree
		prefix = strings.TrimRight(gp, "/") + "/"
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
	groupTenant := make([]string, len(s.Groups))
	d.Teams = make([]store.TeamRow, 0, len(s.Groups))
	for i, g := range s.Groups {
		t := teamTenant(g.Path)
		groupTenant[i] = t
		// A tenant is named after its own group; a deeper group only
		// guarantees the tenant exists.
		if g.Path == prefix+t && t != "" {
			tenants[t] = g.Name
			if g.Marks.Name != "" { // issue 16: renamed by tenant administration
				tenants[t] = g.Marks.Name
			}
			fromKC[t] = store.TenantRow{KeycloakID: g.ID, Status: tenantStatus(g.Marks.Disabled)}
		} else if _, ok := tenants[t]; t != "" && !ok {
			tenants[t] = t
		}
		d.Teams = append(d.Teams, store.TeamRow{ID: g.ID, Tenant: t, Name: g.Name, Path: g.Path, ParentID: g.ParentID, Status: "active"})
	}
	// tenantIDs holds each tenant id once for the rows that name it.
	tenantIDs := map[string]string{}
	tenantID := func(t string) string {
		if x, ok := tenantIDs[t]; ok {
			return x
		}
		tenantIDs[t] = t
		return t
	}
	systemKeys := map[string]string{}

	d.People = make([]store.PersonRow, 0, len(s.Users))
	held := make([]bool, len(s.Roles))
	var eff, stack []int32
	for ui := range s.Users {
		u := &s.Users[ui]
		// Every role the user holds: directly, through their groups, and
		// through composites, transitively.
		stack = append(stack[:0], u.Roles...)
		for _, gi := range u.Groups {
			stack = append(stack, groupRoles[gi]...)
		}
		eff = eff[:0]
		for len(stack) > 0 {
			r := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if held[r] {
				continue
			}
			held[r] = true
			eff = append(eff, r)
			stack = append(stack, children[r]...)
		}
		for _, r := range eff {
			held[r] = false
		}
		slices.SortFunc(eff, func(a, b int32) int { return strings.Compare(keys[a], keys[b]) })
		f := mapping.Facts{Subject: u.ID, Username: u.Username, Email: u.Email, Organizations: orgsOf[u.ID], Attributes: u.Attributes}
		for _, gi := range u.Groups {
			f.Groups = append(f.Groups, s.Groups[gi].Path)
		}
		for _, r := range eff {
			if role := &s.Roles[r]; role.ClientID == "" {
				f.RealmRoles = append(f.RealmRoles, role.Name)
			} else {
				f.ClientRoles = append(f.ClientRoles, role.Key())
			}
		}
		sort.Strings(f.RealmRoles)
		sort.Strings(f.ClientRoles)
		sort.Strings(f.Groups)
		g := e.Resolve(f, nil, now)
		tenant := tenantID(g.Tenant)

		d.People = append(d.People, personRow(*u, invited[u.ID]))
		for _, t := range g.Tenants {
			if _, ok := tenants[t]; !ok {
				tenants[t] = t
			}
			t = tenantID(t)
			d.TenantMembers = append(d.TenantMembers, store.MemberRow{Group: t, Person: u.ID, Tenant: t})
		}
		for _, gi := range u.Groups {
			d.TeamMembers = append(d.TeamMembers, store.MemberRow{Group: s.Groups[gi].ID, Person: u.ID, Tenant: groupTenant[gi]})
		}
		for _, r := range eff {
			d.Assignments = append(d.Assignments, store.AssignmentRow{Person: u.ID, Role: keys[r], Tenant: tenant, Source: "keycloak"})
		}
		for _, name := range g.Roles {
			if r, ok := e.Role(name, g.Tenant); ok && r.Kind == "system" {
				key, ok := systemKeys[name]
				if !ok {
					key = "system||" + name
					systemKeys[name] = key
				}
				d.Assignments = append(d.Assignments, store.AssignmentRow{Person: u.ID, Role: key, Tenant: tenant, Source: "rule"})
			}
		}
	}
	for id, name := range tenants {
		kc := fromKC[id] // issue 16; none for attribute and claim tenants
		d.Tenants = append(d.Tenants, store.TenantRow{ID: id, Name: name, Source: tenantSource, Status: cmp.Or(kc.Status, "active"), KeycloakID: kc.KeycloakID})
	}
	placeCustomers(d.Tenants, s, cfg.Tenant) // issue 16: a tenant tree's customers (tenanttree.go)
	for i, r := range s.Roles {
		d.Roles = append(d.Roles, store.SyncRole{Kind: "keycloak", ClientID: r.ClientID, Name: r.Name, KeycloakID: r.ID,
			Description: r.Description, Composite: r.Composite, Status: "active"})
		for _, c := range children[i] {
			d.Composites = append(d.Composites, store.CompositeRow{Parent: keys[i], Child: keys[c]})
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

// personRow is a Keycloak user as a person: the one rule for status and
// display name, for full runs and events alike. An invited person stays
// invited while Keycloak's required actions are pending (until the first
// login completes them).
func personRow(u User, invited bool) store.PersonRow {
	status := "active"
	switch {
	case !u.Enabled:
		status = "inactive"
	case invited && len(u.RequiredActions) > 0:
		status = "invited"
	}
	display := strings.TrimSpace(u.FirstName + " " + u.LastName)
	if display == "" {
		display = u.Username
	}
	return store.PersonRow{ID: u.ID, Username: u.Username, Email: u.Email, FirstName: u.FirstName,
		LastName: u.LastName, DisplayName: display, Status: status, IdentityProvider: u.IdentityProvider,
		EmailVerified: u.EmailVerified, Created: u.Created}
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
// People named in keep are never updated, deactivated, stripped of or given
// memberships and assignments by this plan: they were written after the
// snapshot was read (an invitation, or an event applied while this run read
// Keycloak), so the snapshot is older than their row.
func Diff(cur, want *store.SyncState, additive bool, keep ...string) *Plan {
	return diff(cur, want, additive, store.Written{People: keep})
}

// diff is Diff leaving alone every row in keep (see planRows).
func diff(cur, want *store.SyncState, additive bool, keep store.Written) *Plan {
	return planRows(cur, want, additive, keep, false)
}

// planRows is Diff leaving alone every row in keep: people (never updated,
// deactivated, stripped of or given memberships and assignments), teams,
// tenants and Keycloak roles (never updated or deactivated; a role's
// composites unchanged). They were written after the snapshot began, by an
// event applied while this run read Keycloak, so the snapshot is older
// than they are; the next run reconciles them.
//
// With consume, the plan takes cur's and want's memberships, composites
// and assignments: it reorders them and keeps what it writes in their
// arrays, so a full run of a large realm holds those rows once. Without,
// both are left as they were.
func planRows(cur, want *store.SyncState, additive bool, keep store.Written, consume bool) *Plan {
	p := &Plan{Changes: Changes{}, Removed: map[string]int{}, Active: map[string]int{}}
	set := func(ids []string) map[string]bool {
		m := make(map[string]bool, len(ids))
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	kept, keptTeams, keptRoles, keptTenants := set(keep.People), set(keep.Teams), set(keep.Roles), set(keep.Tenants)

	notKept := func(id string) bool { return !kept[id] }
	p.Tenants = diffKind(p, "tenants", cur.Tenants, want.Tenants, additive, rowKind[store.TenantRow]{
		key:        func(t store.TenantRow) string { return t.ID },
		status:     func(t *store.TenantRow) *string { return &t.Status },
		deactivate: func(t store.TenantRow) bool { return !keptTenants[t.ID] },
		update:     func(t store.TenantRow) bool { return !keptTenants[t.ID] },
	})
	// People: removed from Keycloak means deleted, never hard-deleted.
	p.People = diffKind(p, "people", cur.People, want.People, additive, rowKind[store.PersonRow]{
		key:        func(x store.PersonRow) string { return x.ID },
		status:     func(x *store.PersonRow) *string { return &x.Status },
		guarded:    func(store.PersonRow) bool { return true },
		deactivate: func(x store.PersonRow) bool { return notKept(x.ID) },
		update:     func(x store.PersonRow) bool { return notKept(x.ID) },
	})
	p.Teams = diffKind(p, "teams", cur.Teams, want.Teams, additive, rowKind[store.TeamRow]{
		key:        func(x store.TeamRow) string { return x.ID },
		status:     func(x *store.TeamRow) *string { return &x.Status },
		guarded:    func(store.TeamRow) bool { return true },
		deactivate: func(x store.TeamRow) bool { return !keptTeams[x.ID] },
		update:     func(x store.TeamRow) bool { return !keptTeams[x.ID] },
	})
	// Roles: a role's permissions are written apart from the role itself,
	// and only for the roles keybridge defines (system and pseudo roles).
	p.Roles = diffKind(p, "roles", cur.Roles, want.Roles, additive, rowKind[store.SyncRole]{
		key:    store.SyncRole.Key,
		status: func(x *store.SyncRole) *string { return &x.Status },
		same: func(c, x store.SyncRole) bool {
			c.Permissions = x.Permissions
			return c == x
		},
		guarded:    func(x store.SyncRole) bool { return x.Kind == "keycloak" },
		deactivate: func(x store.SyncRole) bool { return !keptRoles[x.Key()] },
		update:     func(x store.SyncRole) bool { return !keptRoles[x.Key()] },
		wanted: func(c store.SyncRole, had bool, x store.SyncRole) {
			if (x.Kind == "system" || x.Kind == "pseudo") && (!had || c.Permissions != x.Permissions) {
				p.PermissionChanges = append(p.PermissionChanges, x)
				p.Changes.add("role_permissions", "update", 1)
			}
		},
	})

	p.AddTenantMembers, p.DelTenantMembers = setDiff(cur.TenantMembers, want.TenantMembers, consume, func(a, b store.MemberRow) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Person, b.Person))
	})
	p.AddTeamMembers, p.DelTeamMembers = setDiff(cur.TeamMembers, want.TeamMembers, consume, compareMembers)
	p.AddComposites, p.DelComposites = setDiff(cur.Composites, want.Composites, consume, func(a, b store.CompositeRow) int {
		return cmp.Or(strings.Compare(a.Parent, b.Parent), strings.Compare(a.Child, b.Child))
	})
	p.AddAssignments, p.DelAssignments = setDiff(cur.Assignments, want.Assignments, consume, func(a, b store.AssignmentRow) int {
		return cmp.Or(strings.Compare(a.Person, b.Person), strings.Compare(a.Role, b.Role), strings.Compare(a.Tenant, b.Tenant),
			strings.Compare(a.Source, b.Source), strings.Compare(a.Ref, b.Ref))
	})
	if consume {
		cur.TenantMembers, want.TenantMembers, cur.TeamMembers, want.TeamMembers = nil, nil, nil, nil
		cur.Composites, want.Composites, cur.Assignments, want.Assignments = nil, nil, nil, nil
	}
	unkept := func(m store.MemberRow) bool { return !kept[m.Person] }
	unkeptAssignment := func(a store.AssignmentRow) bool { return !kept[a.Person] }
	unkeptParent := func(c store.CompositeRow) bool { return !keptRoles[c.Parent] }
	p.DelTenantMembers = filter(p.DelTenantMembers, unkept)
	p.DelTeamMembers = filter(p.DelTeamMembers, unkept)
	p.DelAssignments = filter(p.DelAssignments, unkeptAssignment)
	p.AddTenantMembers = filter(p.AddTenantMembers, unkept)
	p.AddTeamMembers = filter(p.AddTeamMembers, unkept)
	p.AddAssignments = filter(p.AddAssignments, unkeptAssignment)
	p.AddComposites = filter(p.AddComposites, unkeptParent)
	p.DelComposites = filter(p.DelComposites, unkeptParent)
	// A team membership whose tenant changed is an update, not a removal.
	p.DelTeamMembers = subtract(p.DelTeamMembers, p.AddTeamMembers)
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

// drift counts, by kind, the rows a plan writes or removes that came from
// Keycloak: every kind of Changes but the permissions of keybridge's own
// roles, and of roles only Keycloak's. Applied by a scheduled run, these
// are what the events since the previous run had missed.
func (p *Plan) drift() map[string]int {
	d := map[string]int{}
	for kind, ops := range p.Changes {
		if kind == "role_permissions" || kind == "roles" {
			continue
		}
		for _, n := range ops {
			d[kind] += n
		}
	}
	for _, r := range p.Roles {
		if r.Kind == "keycloak" {
			d["roles"]++
		}
	}
	return d
}

// rowKind describes one kind of synced row for diffKind.
type rowKind[T comparable] struct {
	key    func(T) string
	status func(*T) *string // the row's status field; "deleted" rows are inactive
	// same reports whether the current row needs no update; nil means ==.
	same func(cur, want T) bool
	// guarded marks the rows the removal guard counts (Active, Removed).
	guarded func(T) bool
	// deactivate, when set, may spare a row missing from Keycloak.
	deactivate func(T) bool
	// update, when set, may spare a current row from an update.
	update func(T) bool
	// wanted, when set, sees every wanted row beside its current one.
	wanted func(cur T, had bool, want T)
}

// diffKind plans one kind of row: rows new in want are created, rows that
// differ are updated, and active rows missing from want are written again
// marked deleted (never removed) unless the plan is additive. It returns
// the rows to write, creates and updates in want's order and then
// deactivations in cur's, and counts them in p.Changes, p.Active and
// p.Removed. Rows are matched by key through sorted indexes, not a map, so
// 100,000 people cost a few hundred kB beside their rows.
func diffKind[T comparable](p *Plan, kind string, cur, want []T, additive bool, k rowKind[T]) []T {
	var out []T
	active := func(x T) bool { return *k.status(&x) != "deleted" }
	guarded := func(x T) bool { return k.guarded != nil && k.guarded(x) }
	for _, x := range cur {
		if active(x) && guarded(x) {
			p.Active[kind]++
		}
	}
	keys := func(rows []T) ([]string, []int32) {
		ks := make([]string, len(rows))
		idx := make([]int32, len(rows))
		for i := range rows {
			ks[i], idx[i] = k.key(rows[i]), int32(i)
		}
		// Stable: of rows with one key, the last in cur is the one compared
		// (as a map would keep it).
		slices.SortStableFunc(idx, func(a, b int32) int { return strings.Compare(ks[a], ks[b]) })
		return ks, idx
	}
	ck, ci := keys(cur)
	wk, wi := keys(want)
	match := make([]int32, len(want)) // want row -> its cur row, -1 when none
	seen := make([]bool, len(cur))    // cur rows whose key is wanted
	for i, j := 0, 0; j < len(wi); {
		w := wi[j]
		for i < len(ci) && ck[ci[i]] < wk[w] {
			i++
		}
		match[w] = -1
		// The last cur row with this key.
		for i < len(ci) && ck[ci[i]] == wk[w] {
			seen[ci[i]] = true
			match[w] = ci[i]
			if i+1 < len(ci) && ck[ci[i+1]] == wk[w] {
				i++
				continue
			}
			break
		}
		j++
	}
	for j, x := range want {
		var c T
		had := match[j] >= 0
		if had {
			c = cur[match[j]]
		}
		switch {
		case !had:
			out = append(out, x)
			p.Changes.add(kind, "create", 1)
		case k.update != nil && !k.update(c):
		case k.same == nil && c != x, k.same != nil && !k.same(c, x):
			out = append(out, x)
			p.Changes.add(kind, "update", 1)
		}
		if k.wanted != nil {
			k.wanted(c, had, x)
		}
	}
	if additive {
		return out
	}
	for i, x := range cur {
		if seen[i] || !active(x) || (k.deactivate != nil && !k.deactivate(x)) {
			continue
		}
		*k.status(&x) = "deleted"
		out = append(out, x)
		p.Changes.add(kind, "deactivate", 1)
		if guarded(x) {
			p.Removed[kind]++
		}
	}
	return out
}

// setDiff returns the rows of want missing from cur (add, each once, in
// want's order) and those of cur missing from want (del, in cur's order),
// rows being equal when cmp says so. Rows are matched through sorted
// indexes, not a map of keys. With consume, add and del are kept in want's
// and cur's own arrays, which the caller gives up.
func setDiff[T any](cur, want []T, consume bool, cmp func(a, b T) int) (add, del []T) {
	order := func(rows []T) []int32 {
		idx := make([]int32, len(rows))
		for i := range idx {
			idx[i] = int32(i)
		}
		slices.SortStableFunc(idx, func(a, b int32) int { return cmp(rows[a], rows[b]) })
		return idx
	}
	ci, wi := order(cur), order(want)
	inCur := make([]bool, len(want)) // want rows cur has, or wanted earlier
	inWant := make([]bool, len(cur)) // cur rows want has
	for i, j := 0, 0; j < len(wi); j++ {
		w := wi[j]
		if j > 0 && cmp(want[wi[j-1]], want[w]) == 0 {
			inCur[w] = true // wanted twice: added once
		}
		for i < len(ci) && cmp(cur[ci[i]], want[w]) < 0 {
			i++
		}
		for k := i; k < len(ci) && cmp(cur[ci[k]], want[w]) == 0; k++ {
			inCur[w], inWant[ci[k]] = true, true
		}
	}
	if consume {
		add, del = want[:0], cur[:0]
	}
	for j := range want {
		if !inCur[j] {
			add = append(add, want[j])
		}
	}
	for i := range cur {
		if !inWant[i] {
			del = append(del, cur[i])
		}
	}
	if len(add) == 0 {
		add = nil
	}
	if len(del) == 0 {
		del = nil
	}
	return add, del
}

func compareMembers(a, b store.MemberRow) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Person, b.Person), strings.Compare(a.Tenant, b.Tenant))
}

// subtract drops from del the team memberships add writes again (the same
// team and person: a tenant that changed), in place.
func subtract(del, add []store.MemberRow) []store.MemberRow {
	if len(del) == 0 || len(add) == 0 {
		return del
	}
	same := func(a, b store.MemberRow) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Person, b.Person))
	}
	idx := make([]int32, len(add))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return same(add[a], add[b]) })
	return filter(del, func(m store.MemberRow) bool {
		_, found := slices.BinarySearchFunc(idx, m, func(i int32, m store.MemberRow) int { return same(add[i], m) })
		return !found
	})
}

// filter keeps the rows keep says, in place; nil when none is kept.
func filter[T any](in []T, keep func(T) bool) []T {
	out := in[:0]
	for _, x := range in {
		if keep(x) {
			out = append(out, x)
		}
	}
	clear(in[len(out):])
	if len(out) == 0 {
		return nil
	}
	return out
}
