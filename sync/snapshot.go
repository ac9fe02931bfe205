package sync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	gosync "sync"
	"sync/atomic"
)

// User is a Keycloak user as the snapshot needs it.
type User struct {
	ID               string              `json:"id"`
	Username         string              `json:"username"`
	Email            string              `json:"email"`
	FirstName        string              `json:"firstName"`
	LastName         string              `json:"lastName"`
	Enabled          bool                `json:"enabled"`
	EmailVerified    bool                `json:"emailVerified"`
	Created          int64               `json:"createdTimestamp"`
	Attributes       map[string][]string `json:"attributes"`
	RequiredActions  []string            `json:"requiredActions"`
	IdentityProvider string              `json:"-"`
	// ServiceAccount is the client of a service-account user, which the
	// user listing leaves out and keybridge does not sync.
	ServiceAccount string `json:"serviceAccountClientId"`
	// NotBefore is the user's not-before in seconds (set by a logout of all
	// their sessions), 0 when none: sessions.go.
	NotBefore int64 `json:"notBefore"`

	// Roles are the roles the user holds directly, as indexes into the
	// snapshot's Roles; Groups are the groups the user is a direct member
	// of, as indexes into its Groups. The snapshot fills them.
	Roles  []int32 `json:"-"`
	Groups []int32 `json:"-"`

	ord  int32 // the user's id in the snapshot's interner (snapRead)
	gone bool  // deleted since the listing: their role mappings answered 404
}

// Group is a Keycloak group with its role mappings.
type Group struct {
	ID            string              `json:"id"`
	Name          string              `json:"name"`
	Path          string              `json:"path"`
	ParentID      string              `json:"parentId"`
	SubGroupCount int                 `json:"subGroupCount"`
	RealmRoles    []string            `json:"realmRoles"`
	ClientRoles   map[string][]string `json:"clientRoles"`
	// Marks are the group's keybridge.tenant.* attributes, the only ones
	// kept (issue 16, tenantmarks.go): a tenant group's name and disabled flag.
	Marks TenantMarks `json:"attributes"`
}

// Role is a realm role (ClientID "") or a client role.
type Role struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Composite   bool     `json:"composite"`
	ClientID    string   `json:"-"` // the client's clientId for client roles
	Children    []string `json:"-"` // ids of composite children
}

// Key names a role as "name" (realm) or "client:name".
func (r Role) Key() string {
	if r.ClientID == "" {
		return r.Name
	}
	return r.ClientID + ":" + r.Name
}

// Org is a Keycloak organization.
type Org struct {
	ID      string   `json:"id"`
	Alias   string   `json:"alias"`
	Name    string   `json:"name"`
	Members []string `json:"-"`
	// Enabled is false for an organization disabled in Keycloak (its tenant
	// is disabled, issue 16); nil, when an answer leaves it out, is enabled.
	Enabled *bool `json:"enabled"`
}

// Snapshot is a complete read of the realm. Nothing is written until one
// has been read whole. Who holds what is kept on each user, as indexes into
// Roles and Groups, so a realm of 100,000 users holds each id once.
type Snapshot struct {
	Users    []User
	Groups   []Group
	Roles    []Role
	Orgs     []Org
	Requests int64
}

type brief struct {
	ID string `json:"id"`
}

// SnapshotOptions say which optional parts to read.
type SnapshotOptions struct {
	Clients       []string // clientIds whose roles matter (from the mapping rules)
	Organizations bool
	// Attributes, when not nil, are the user attributes to keep (those the
	// mapping reads, mapping.Engine.AttributeInputs); the rest are dropped
	// as each page of users arrives. nil keeps every attribute.
	Attributes []string
	// Progress, when not nil, is told after each request the phase it
	// belongs to and how many objects it read. Concurrent requests call it
	// concurrently.
	Progress func(phase string, objects int)
}

func (o SnapshotOptions) report(phase string) func(int) {
	if o.Progress == nil {
		return func(int) {}
	}
	return func(n int) { o.Progress(phase, n) }
}

// Phases of a snapshot, as progress reports name them.
const (
	PhaseUsers        = "users"         // the user listing
	PhaseGroups       = "groups"        // the group tree
	PhaseGroupMembers = "group_members" // members of each group
	PhaseRoles        = "roles"         // realm and client roles, composites
	PhaseRoleHolders  = "role_holders"  // direct holders of each role, paged per role
	PhaseRoleMappings = "role_mappings" // direct role mappings, read per user
	PhaseOrgs         = "organizations" // organizations and their members
)

// holderPagingLimit is where reading a role's holders page by page stops.
//
// Keycloak answers GET /roles/{name}/users?first=&max= in time that grows
// with first: it walks the role's holders up to the offset on every call,
// so reading a role that every user holds costs time quadratic in the
// realm. Measured on the local Keycloak 26.5.6 (start-dev, embedded H2,
// two shared cores), 5,000 users all holding default-roles-<realm>, pages
// of 200, one request at a time (ranges over runs):
//
//	first                          0          400        1,000      2,000      4,000      4,800
//	role holders, s                0.03-0.09  0.09-0.38  0.9-1.3    2.4-2.9    3-17       3.5-39
//	users (briefRepresentation=
//	  false), s                    0.03-0.12  0.05-0.13  0.03-0.10  0.03-0.10  0.09-0.10  0.04-0.12
//	group members (of 2,500), s    0.03       0.05       0.05       0.06       -          -
//
// The user listing and group members stay flat in first, so they are
// paged whole. A user's direct role mappings (GET /users/{id}/role-mappings:
// realm and client roles in one answer) cost 0.6 to 1.3 ms whatever the
// realm, so the 200 holders of a page cost 0.1 to 0.27 s read per user:
// less than any page of holders beyond first=400. Reading the whole
// default role of 5,000 users page by page, as the snapshot once did,
// failed after 1m45s (a page at first=3,800 exceeded keycloak.timeout,
// 10s, on every retry); read this way, a whole snapshot of that realm
// (5,000 users, 505 groups, 233 roles, 20 organizations) took 7 to 15 s.
//
// So holders are paged only in a realm of fewer than holderPagingLimit
// users (GET /users/count, one request, says), and each role only while
// first < holderPagingLimit. A larger realm skips holder paging entirely:
// every user's direct mappings are read (keycloak.concurrency at a time)
// as each page of the user listing arrives, and answer for every role at
// once. In a smaller realm, a role found with that many holders anyway
// (service accounts are listed as holders, not counted as users) switches
// the snapshot to the per-user reads.
const holderPagingLimit = 1000

// Snapshot reads the realm. Its cost is linear in the realm: every listing
// it pages costs the same per page at any offset, except role holders,
// which it pages only in a small realm (see holderPagingLimit).
//
// Its parts are read at once, keycloak.concurrency requests in flight in
// all: the user listing, each page's role mappings as the page arrives (in
// a realm of holderPagingLimit users or more), the group tree level by
// level with each group's members, roles and composites, organizations and
// their members, identity-provider links.
func (k *Keycloak) Snapshot(ctx context.Context, o SnapshotOptions) (*Snapshot, error) {
	before := k.Requests()
	ctx = withLimit(ctx, k.conc)
	var count int
	if err := k.get(ctx, "count_users", "/users/count", nil, &count); err != nil {
		return nil, fmt.Errorf("count users: %w", err)
	}
	r := &snapRead{k: k, o: o, perUser: count >= holderPagingLimit, users: newInterner(), roles: newInterner()}
	if o.Attributes != nil {
		r.keepAttrs = make(map[string]bool, len(o.Attributes))
		for _, a := range o.Attributes {
			r.keepAttrs[a] = true
		}
	}
	g := newTaskGroup(ctx)
	g.Go(r.readUsers)
	g.Go(r.readGroups)
	g.Go(r.readRoles)
	g.Go(r.readIdentityProviders)
	if o.Organizations {
		g.Go(r.readOrgs)
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if !r.perUser {
		// A small realm: each role's holders, paged, now that the roles are
		// known; a role with holderPagingLimit holders or more turns to
		// reading every user's mappings, the users listed by now.
		if err := r.readHolders(ctx); err != nil {
			return nil, err
		}
	}
	s := r.assemble()
	s.Requests = k.Requests() - before
	return s, nil
}

// snapRead is one snapshot under way. Users and roles are interned: each
// id is held once, and who holds or belongs to what as small integers.
type snapRead struct {
	k         *Keycloak
	o         SnapshotOptions
	perUser   bool // read each user's mappings instead of paging holders
	keepAttrs map[string]bool
	users     *interner // user ids
	roles     *interner // role ids, as per-user role mappings name them

	pages   [][]User  // the user listing, page by page (readUsers)
	groups  []Group   // breadth first (readGroups)
	members [][]int32 // per group: its direct members' user ordinals
	roleSet []Role    // realm roles, then the clients' (readRoles)
	paths   []string  // per role: where its holders are listed
	holders [][]int32 // per role: direct holders' user ordinals (readHolders)
	linked  map[string]string
	orgs    []Org
}

// readUsers pages through the user listing. In a large realm each page's
// users have their direct role mappings read as soon as the page arrives,
// by keycloak.concurrency workers, while the listing goes on.
func (r *snapRead) readUsers(ctx context.Context) error {
	report := r.o.report(PhaseUsers)
	var work chan []User
	var workers gosync.WaitGroup
	var firstErr error
	var errOnce gosync.Once
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.perUser {
		work = make(chan []User, 1)
		next := make(chan *User)
		for range r.k.conc {
			workers.Go(func() {
				for u := range next {
					if err := r.readMappings(cctx, u); err != nil {
						errOnce.Do(func() { firstErr = err; cancel() })
					}
				}
			})
		}
		workers.Go(func() {
			defer close(next)
			for page := range work {
				for i := range page {
					select {
					case next <- &page[i]:
					case <-cctx.Done():
					}
				}
			}
		})
	}
	q := url.Values{"briefRepresentation": {"false"}}
	var err error
	for first := 0; ; first += r.k.pageSize {
		var page []User
		if err = r.k.get(cctx, "list_users", "/users", pageQuery(q, first, r.k.pageSize), &page); err != nil {
			err = fmt.Errorf("list users: %w", err)
			break
		}
		report(len(page))
		for i := range page {
			u := &page[i]
			u.ord, u.ID = r.users.of(u.ID)
			if r.keepAttrs != nil {
				maps.DeleteFunc(u.Attributes, func(a string, _ []string) bool { return !r.keepAttrs[a] })
				if len(u.Attributes) == 0 {
					u.Attributes = nil
				}
			}
		}
		r.pages = append(r.pages, page)
		if work != nil && len(page) > 0 {
			select {
			case work <- page:
			case <-cctx.Done():
			}
		}
		if len(page) < r.k.pageSize {
			break
		}
	}
	if err != nil {
		cancel()
	}
	if work != nil {
		close(work)
		workers.Wait()
	}
	switch {
	case err != nil:
		return err
	case firstErr != nil:
		return firstErr
	}
	return ctx.Err()
}

// mappings is a user's direct role mappings: realm roles and every
// client's, in one answer.
type mappings struct {
	RealmMappings  []brief `json:"realmMappings"`
	ClientMappings map[string]struct {
		Mappings []brief `json:"mappings"`
	} `json:"clientMappings"`
}

// readMappings reads one user's direct role mappings into u.Roles (role
// ordinals until assemble). A user deleted since the listing (404) leaves
// the snapshot.
func (r *snapRead) readMappings(ctx context.Context, u *User) error {
	var m mappings
	err := r.k.get(ctx, "get_user_role_mappings", "/users/"+url.PathEscape(u.ID)+"/role-mappings", nil, &m)
	r.o.report(PhaseRoleMappings)(1)
	switch {
	case errors.Is(err, ErrNotFound):
		u.gone = true
		return nil
	case err != nil:
		return fmt.Errorf("read role mappings of user %s: %w", u.Username, err)
	}
	roles := make([]int32, 0, len(m.RealmMappings))
	for _, x := range m.RealmMappings {
		ord, _ := r.roles.of(x.ID)
		roles = append(roles, ord)
	}
	for _, c := range m.ClientMappings {
		for _, x := range c.Mappings {
			ord, _ := r.roles.of(x.ID)
			roles = append(roles, ord)
		}
	}
	u.Roles = roles
	return nil
}

// readRoles lists realm roles and the roles of the clients the mapping
// names, then each composite's children.
func (r *snapRead) readRoles(ctx context.Context) error {
	k := r.k
	report := r.o.report(PhaseRoles)
	realm, _, err := pagesUpTo[Role](ctx, k, "list_realm_roles", "/roles", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
	if err != nil {
		return fmt.Errorf("list realm roles: %w", err)
	}
	roles := realm
	paths := make([]string, 0, len(realm))
	for i := range realm {
		paths = append(paths, "/roles/"+url.PathEscape(realm[i].Name)+"/users")
	}
	for _, clientID := range r.o.Clients {
		var clients []struct {
			ID       string `json:"id"`
			ClientID string `json:"clientId"`
		}
		if err := k.get(ctx, "find_client", "/clients", url.Values{"clientId": {clientID}}, &clients); err != nil {
			return fmt.Errorf("find client %s: %w", clientID, err)
		}
		for _, c := range clients {
			if c.ClientID != clientID {
				continue
			}
			cr, _, err := pagesUpTo[Role](ctx, k, "list_client_roles", "/clients/"+c.ID+"/roles", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
			if err != nil {
				return fmt.Errorf("list roles of client %s: %w", clientID, err)
			}
			for i := range cr {
				cr[i].ClientID = clientID
				paths = append(paths, "/clients/"+c.ID+"/roles/"+url.PathEscape(cr[i].Name)+"/users")
			}
			roles = append(roles, cr...)
		}
	}
	err = k.forEach(ctx, len(roles), func(ctx context.Context, i int) error {
		if !roles[i].Composite {
			return nil
		}
		var children []brief
		if err := k.get(ctx, "list_composites", "/roles-by-id/"+roles[i].ID+"/composites", nil, &children); err != nil {
			return fmt.Errorf("list composites of %s: %w", roles[i].Key(), err)
		}
		for _, c := range children {
			roles[i].Children = append(roles[i].Children, c.ID)
		}
		report(len(children))
		return nil
	})
	if err != nil {
		return err
	}
	r.roleSet, r.paths = roles, paths
	return nil
}

// readHolders pages each role's direct holders in a small realm, the
// realm's default role first and alone, then its composites (which users
// of realms older than the default role, Keycloak 13, may hold directly),
// then the rest. A role with holderPagingLimit holders or more stops the
// paging: every user's mappings are read instead.
func (r *snapRead) readHolders(ctx context.Context) error {
	roles := r.roleSet
	if len(roles) == 0 {
		return nil
	}
	k := r.k
	def, err := k.defaultRole(ctx)
	if err != nil {
		return err
	}
	isDefault := func(x Role) bool { return x.ID == def.ID || (def.ID == "" && x.ClientID == "" && x.Name == def.Name) }
	var defChildren []string
	for _, x := range roles {
		if isDefault(x) {
			defChildren = x.Children
		}
	}
	rank := func(x Role) int {
		switch {
		case isDefault(x):
			return 0
		case slices.Contains(defChildren, x.ID):
			return 1
		}
		return 2
	}
	order := make([]int, 0, len(roles))
	for n := 0; n <= 2; n++ {
		for i := range roles {
			if rank(roles[i]) == n {
				order = append(order, i)
			}
		}
	}
	size := min(k.pageSize, holderPagingLimit)
	report := r.o.report(PhaseRoleHolders)
	holders := make([][]int32, len(roles))
	var large atomic.Value // the Key of a role with holderPagingLimit holders or more
	page := func(ctx context.Context, i int) error {
		if large.Load() != nil {
			return nil
		}
		hs, complete, err := pagesUpTo[brief](ctx, k, "list_role_holders", r.paths[i], url.Values{"briefRepresentation": {"true"}}, size, holderPagingLimit, report)
		if err != nil {
			return fmt.Errorf("list holders of %s: %w", roles[i].Key(), err)
		}
		if !complete {
			large.CompareAndSwap(nil, roles[i].Key())
		}
		holders[i] = r.ordinals(hs)
		return nil
	}
	if err := page(ctx, order[0]); err != nil {
		return err
	}
	if err := k.forEach(ctx, len(order)-1, func(ctx context.Context, j int) error { return page(ctx, order[j+1]) }); err != nil {
		return err
	}
	role := large.Load()
	if role == nil {
		r.holders = holders
		return nil
	}
	var all []*User
	for _, p := range r.pages {
		for i := range p {
			all = append(all, &p[i])
		}
	}
	err = k.forEach(ctx, len(all), func(ctx context.Context, i int) error { return r.readMappings(ctx, all[i]) })
	if err != nil {
		return fmt.Errorf("role %s has %d holders or more, so holders are read per user: %w", role, holderPagingLimit, err)
	}
	r.perUser = true
	return nil
}

type defaultRole struct{ ID, Name string }

// defaultRole names the realm's default role from the realm
// representation; without view-realm (403) it is found by the name Keycloak
// gives it.
func (k *Keycloak) defaultRole(ctx context.Context) (defaultRole, error) {
	var rep struct {
		DefaultRole *struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"defaultRole"`
	}
	err := k.get(ctx, "get_realm", "", nil, &rep)
	switch {
	case errors.Is(err, ErrForbidden):
	case err != nil:
		return defaultRole{}, fmt.Errorf("read the realm's default role: %w", err)
	case rep.DefaultRole != nil:
		return defaultRole{ID: rep.DefaultRole.ID, Name: rep.DefaultRole.Name}, nil
	}
	return defaultRole{Name: "default-roles-" + strings.ToLower(k.realm)}, nil
}

// readGroups walks the tree level by level: since Keycloak 23 a level comes
// with subGroupCount and empty subGroups, and children are paged
// separately. Each group's members and children are read together,
// keycloak.concurrency groups at a time.
func (r *snapRead) readGroups(ctx context.Context) error {
	k := r.k
	report := r.o.report(PhaseGroups)
	top, _, err := pagesUpTo[Group](ctx, k, "list_groups", "/groups", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	memberReport := r.o.report(PhaseGroupMembers)
	level := unique(top, func(g Group) string { return g.ID }, self[Group])
	for len(level) > 0 {
		members := make([][]int32, len(level))
		children := make([][]Group, len(level))
		err := k.forEach(ctx, len(level), func(ctx context.Context, i int) error {
			g := level[i]
			m, _, err := pagesUpTo[brief](ctx, k, "list_group_members", "/groups/"+g.ID+"/members", url.Values{"briefRepresentation": {"true"}}, k.pageSize, 0, memberReport)
			if err != nil {
				return fmt.Errorf("list members of %s: %w", g.Path, err)
			}
			members[i] = r.ordinals(m)
			if g.SubGroupCount > 0 {
				if children[i], err = k.childrenOf(ctx, g, report); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		r.groups = append(r.groups, level...)
		r.members = append(r.members, members...)
		level = slices.Concat(children...)
	}
	return nil
}

// ordinals interns the ids of a listing of users, each once.
func (r *snapRead) ordinals(b []brief) []int32 {
	out := make([]int32, 0, len(b))
	seen := make(map[int32]bool, len(b))
	for _, x := range b {
		ord, _ := r.users.of(x.ID)
		if !seen[ord] {
			seen[ord] = true
			out = append(out, ord)
		}
	}
	return out
}

// readOrgs lists organizations and each one's members.
func (r *snapRead) readOrgs(ctx context.Context) error {
	k := r.k
	report := r.o.report(PhaseOrgs)
	orgs, _, err := pagesUpTo[Org](ctx, k, "list_organizations", "/organizations", url.Values{"briefRepresentation": {"true"}}, k.pageSize, 0, report)
	if err != nil {
		return fmt.Errorf("list organizations: %w", err)
	}
	err = k.forEach(ctx, len(orgs), func(ctx context.Context, i int) error {
		m, _, err := pagesUpTo[brief](ctx, k, "list_organization_members", "/organizations/"+orgs[i].ID+"/members", nil, k.pageSize, 0, report)
		if err != nil {
			return fmt.Errorf("list members of organization %s: %w", orgs[i].Alias, err)
		}
		for _, ord := range r.ordinals(m) {
			orgs[i].Members = append(orgs[i].Members, r.users.id(ord))
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.orgs = orgs
	return nil
}

// readIdentityProviders finds each user's linked identity provider with one
// search per provider instead of one request per user.
func (r *snapRead) readIdentityProviders(ctx context.Context) error {
	idps, err := r.k.identityProviders(ctx)
	if err != nil {
		return err
	}
	linked := map[string]string{}
	for _, alias := range idps {
		us, err := pages[brief](ctx, r.k, "list_idp_users", "/users", url.Values{"idpAlias": {alias}, "briefRepresentation": {"true"}})
		if err != nil {
			return fmt.Errorf("list users of identity provider %s: %w", alias, err)
		}
		for _, u := range us {
			if _, ok := linked[u.ID]; !ok {
				linked[u.ID] = alias
			}
		}
	}
	r.linked = linked
	return nil
}

// assemble puts the parts together: each user listed once (a user listed
// twice by offset paging over a changing list is kept once; twice in one
// plan would make PostgreSQL refuse the whole apply), without those gone
// since the listing, with their roles, groups and identity provider.
func (r *snapRead) assemble() *Snapshot {
	s := &Snapshot{Groups: r.groups, Roles: r.roleSet, Orgs: r.orgs}
	n := 0
	for _, p := range r.pages {
		n += len(p)
	}
	s.Users = make([]User, 0, n)
	at := make([]int32, r.users.len()) // user ordinal -> index in s.Users, -1 when not there
	for i := range at {
		at[i] = -1
	}
	// Role ordinals (per-user mappings) to indexes in s.Roles; roles of
	// clients the snapshot does not read are dropped.
	roleAt := make([]int32, r.roles.len())
	for i := range roleAt {
		roleAt[i] = -1
	}
	for i := range s.Roles {
		if ord, ok := r.roles.lookup(s.Roles[i].ID); ok {
			roleAt[ord] = int32(i)
		}
	}
	for pi, p := range r.pages {
		for i := range p {
			u := &p[i]
			if u.gone || at[u.ord] >= 0 {
				continue
			}
			if r.perUser {
				u.Roles = slices.DeleteFunc(u.Roles, func(ord int32) bool { return roleAt[ord] < 0 })
				for j, ord := range u.Roles {
					u.Roles[j] = roleAt[ord]
				}
			} else {
				u.Roles = nil
			}
			u.IdentityProvider = r.linked[u.ID]
			at[u.ord] = int32(len(s.Users))
			s.Users = append(s.Users, *u)
		}
		r.pages[pi] = nil
	}
	for gi, ms := range r.members {
		for _, ord := range ms {
			if i := at[ord]; i >= 0 {
				s.Users[i].Groups = append(s.Users[i].Groups, int32(gi))
			}
		}
	}
	for ri, hs := range r.holders {
		for _, ord := range hs {
			if i := at[ord]; i >= 0 {
				s.Users[i].Roles = append(s.Users[i].Roles, int32(ri))
			}
		}
	}
	return s
}

// childrenOf lists a group's direct children with their role mappings.
func (k *Keycloak) childrenOf(ctx context.Context, g Group, report func(int)) ([]Group, error) {
	children, _, err := pagesUpTo[Group](ctx, k, "list_child_groups", "/groups/"+url.PathEscape(g.ID)+"/children", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
	if err != nil {
		return nil, fmt.Errorf("list children of %s: %w", g.Path, err)
	}
	for i := range children {
		children[i].ParentID = g.ID
		if children[i].Path == "" {
			children[i].Path = strings.TrimRight(g.Path, "/") + "/" + children[i].Name
		}
	}
	return children, nil
}

// identityProviders lists the realm's identity provider aliases in order:
// a person's provider is the first they are linked to. Without view on
// identity providers (403) the list is empty and so is every person's
// provider; the rest of the snapshot is still whole. Any other failure is
// an error: an empty list would blank every person's provider.
func (k *Keycloak) identityProviders(ctx context.Context) ([]string, error) {
	var idps []struct {
		Alias string `json:"alias"`
	}
	if err := k.get(ctx, "list_identity_providers", "/identity-provider/instances", nil, &idps); err != nil {
		if errors.Is(err, ErrForbidden) {
			return nil, nil
		}
		return nil, fmt.Errorf("list identity providers: %w", err)
	}
	out := make([]string, len(idps))
	for i, idp := range idps {
		out[i] = idp.Alias
	}
	sort.Strings(out)
	return out, nil
}

// User re-reads one user for an incremental change; ErrNotFound when gone.
func (k *Keycloak) User(ctx context.Context, id string) (*User, error) {
	var u User
	if err := k.get(ctx, "get_user", "/users/"+url.PathEscape(id), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func ids(b []brief) []string {
	return unique(b, func(x brief) string { return x.ID }, func(x brief) string { return x.ID })
}

// unique keeps the first of each key and maps what it keeps. Offset paging
// over a list that changes during the read can return an entry twice (one
// created before the offset shifts the rest); twice in one plan would make
// PostgreSQL refuse the whole apply.
func unique[T, U any](xs []T, key func(T) string, as func(T) U) []U {
	seen := make(map[string]bool, len(xs))
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		if k := key(x); !seen[k] {
			seen[k] = true
			out = append(out, as(x))
		}
	}
	return out
}

func self[T any](x T) T { return x }
