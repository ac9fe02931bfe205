package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
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
}

// Snapshot is a complete read of the realm. Nothing is written until one
// has been read whole.
type Snapshot struct {
	Users        []User
	Groups       []Group
	Roles        []Role
	GroupMembers map[string][]string // group id -> user ids
	RoleHolders  map[string][]string // role id -> user ids (direct)
	Orgs         []Org
	Requests     int64
}

type brief struct {
	ID string `json:"id"`
}

// SnapshotOptions say which optional parts to read.
type SnapshotOptions struct {
	Clients       []string // clientIds whose roles matter (from the mapping rules)
	Organizations bool
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
// So each role is paged only while first < holderPagingLimit: at most
// 1,000 holders (five pages of 200), about 1.3 to 2 s for a role that
// reaches the limit, the cost of 1,000 to 3,000 per-user reads. The first
// role found to have that many holders switches the snapshot to reading
// every user's direct mappings (keycloak.concurrency at a time), which
// answer for every role at once; a realm where no role has that many
// holders never pays them. The realm's default role, which every user
// created through the admin API holds, is tried first and alone, then its
// composites (which users of realms older than the default role, Keycloak
// 13, may hold directly), then the rest.
const holderPagingLimit = 1000

// Snapshot reads the realm. Its cost is linear in the realm: every listing
// it pages costs the same per page at any offset, except role holders,
// which it pages only up to holderPagingLimit before reading per user (see
// there).
func (k *Keycloak) Snapshot(ctx context.Context, o SnapshotOptions) (*Snapshot, error) {
	before := k.Requests()
	s := &Snapshot{GroupMembers: map[string][]string{}, RoleHolders: map[string][]string{}}
	users, _, err := pagesUpTo[User](ctx, k, "list_users", "/users", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, o.report(PhaseUsers))
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	s.Users = unique(users, func(u User) string { return u.ID }, self[User])
	if err := k.readGroups(ctx, s, o); err != nil {
		return nil, err
	}
	roleReport := o.report(PhaseRoles)
	realm, _, err := pagesUpTo[Role](ctx, k, "list_realm_roles", "/roles", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, roleReport)
	if err != nil {
		return nil, fmt.Errorf("list realm roles: %w", err)
	}
	// holdersPath is where each role's holders are listed.
	holdersPath := map[string]string{}
	for i := range realm {
		holdersPath[realm[i].ID] = "/roles/" + url.PathEscape(realm[i].Name) + "/users"
	}
	s.Roles = append(s.Roles, realm...)
	for _, clientID := range o.Clients {
		var clients []struct {
			ID       string `json:"id"`
			ClientID string `json:"clientId"`
		}
		if err := k.get(ctx, "find_client", "/clients", url.Values{"clientId": {clientID}}, &clients); err != nil {
			return nil, fmt.Errorf("find client %s: %w", clientID, err)
		}
		for _, c := range clients {
			if c.ClientID != clientID {
				continue
			}
			roles, _, err := pagesUpTo[Role](ctx, k, "list_client_roles", "/clients/"+c.ID+"/roles", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, roleReport)
			if err != nil {
				return nil, fmt.Errorf("list roles of client %s: %w", clientID, err)
			}
			for i := range roles {
				roles[i].ClientID = clientID
				holdersPath[roles[i].ID] = "/clients/" + c.ID + "/roles/" + url.PathEscape(roles[i].Name) + "/users"
			}
			s.Roles = append(s.Roles, roles...)
		}
	}
	err = k.forEach(ctx, len(s.Roles), func(ctx context.Context, i int) error {
		if !s.Roles[i].Composite {
			return nil
		}
		var children []Role
		if err := k.get(ctx, "list_composites", "/roles-by-id/"+s.Roles[i].ID+"/composites", nil, &children); err != nil {
			return fmt.Errorf("list composites of %s: %w", s.Roles[i].Key(), err)
		}
		for _, c := range children {
			s.Roles[i].Children = append(s.Roles[i].Children, c.ID)
		}
		roleReport(len(children))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := k.readHolders(ctx, s, holdersPath, o); err != nil {
		return nil, err
	}
	if err := k.readIdentityProviders(ctx, s); err != nil {
		return nil, err
	}
	if o.Organizations {
		orgReport := o.report(PhaseOrgs)
		orgs, _, err := pagesUpTo[Org](ctx, k, "list_organizations", "/organizations", url.Values{"briefRepresentation": {"true"}}, k.pageSize, 0, orgReport)
		if err != nil {
			return nil, fmt.Errorf("list organizations: %w", err)
		}
		err = k.forEach(ctx, len(orgs), func(ctx context.Context, i int) error {
			m, _, err := pagesUpTo[brief](ctx, k, "list_organization_members", "/organizations/"+orgs[i].ID+"/members", nil, k.pageSize, 0, orgReport)
			if err != nil {
				return fmt.Errorf("list members of organization %s: %w", orgs[i].Alias, err)
			}
			orgs[i].Members = ids(m)
			return nil
		})
		if err != nil {
			return nil, err
		}
		s.Orgs = orgs
	}
	s.Requests = k.Requests() - before
	return s, nil
}

// readHolders fills s.RoleHolders with each role's direct holders: paged
// per role while every role stays below holderPagingLimit, else from every
// user's direct role mappings (see holderPagingLimit).
func (k *Keycloak) readHolders(ctx context.Context, s *Snapshot, holdersPath map[string]string, o SnapshotOptions) error {
	if len(s.Roles) == 0 {
		return nil
	}
	def, err := k.defaultRole(ctx)
	if err != nil {
		return err
	}
	// The default role first, then its composites, then the rest.
	isDefault := func(r Role) bool { return r.ID == def.ID || (def.ID == "" && r.ClientID == "" && r.Name == def.Name) }
	var defChildren []string
	for _, r := range s.Roles {
		if isDefault(r) {
			defChildren = r.Children
		}
	}
	rank := func(r Role) int {
		switch {
		case isDefault(r):
			return 0
		case slices.Contains(defChildren, r.ID):
			return 1
		}
		return 2
	}
	order := make([]int, 0, len(s.Roles))
	for r := 0; r <= 2; r++ {
		for i := range s.Roles {
			if rank(s.Roles[i]) == r {
				order = append(order, i)
			}
		}
	}
	size := min(k.pageSize, holderPagingLimit)
	report := o.report(PhaseRoleHolders)
	holders := make([][]string, len(s.Roles))
	var large atomic.Value // the Key of a role with holderPagingLimit holders or more
	page := func(ctx context.Context, i int) error {
		if large.Load() != nil {
			return nil
		}
		hs, complete, err := pagesUpTo[brief](ctx, k, "list_role_holders", holdersPath[s.Roles[i].ID], url.Values{"briefRepresentation": {"true"}}, size, holderPagingLimit, report)
		if err != nil {
			return fmt.Errorf("list holders of %s: %w", s.Roles[i].Key(), err)
		}
		if !complete {
			large.CompareAndSwap(nil, s.Roles[i].Key())
		}
		holders[i] = ids(hs)
		return nil
	}
	// The default role alone first: when it is large, as in any realm whose
	// users were created through the admin API, no other role is paged.
	if err := page(ctx, order[0]); err != nil {
		return err
	}
	if err := k.forEach(ctx, len(order)-1, func(ctx context.Context, j int) error { return page(ctx, order[j+1]) }); err != nil {
		return err
	}
	if role := large.Load(); role != nil {
		return k.holdersFromUsers(ctx, s, role.(string), o)
	}
	for i := range s.Roles {
		s.RoleHolders[s.Roles[i].ID] = holders[i]
	}
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

// holdersFromUsers reads every user's direct role mappings, keycloak.
// concurrency at a time, and derives every role's holders from them. A user
// deleted since the listing (404) leaves the snapshot.
func (k *Keycloak) holdersFromUsers(ctx context.Context, s *Snapshot, large string, o SnapshotOptions) error {
	type mappings struct {
		RealmMappings  []brief `json:"realmMappings"`
		ClientMappings map[string]struct {
			Mappings []brief `json:"mappings"`
		} `json:"clientMappings"`
	}
	report := o.report(PhaseRoleMappings)
	got := make([]*mappings, len(s.Users))
	err := k.forEach(ctx, len(s.Users), func(ctx context.Context, i int) error {
		var m mappings
		err := k.get(ctx, "get_user_role_mappings", "/users/"+url.PathEscape(s.Users[i].ID)+"/role-mappings", nil, &m)
		switch {
		case errors.Is(err, ErrNotFound):
			report(1)
			return nil
		case err != nil:
			return fmt.Errorf("read role mappings of user %s (role %s has %d holders or more, so holders are read per user): %w", s.Users[i].Username, large, holderPagingLimit, err)
		}
		got[i] = &m
		report(1)
		return nil
	})
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(s.Roles))
	for _, r := range s.Roles {
		known[r.ID] = true
		s.RoleHolders[r.ID] = []string{}
	}
	hold := func(u string, rs []brief) {
		for _, r := range rs {
			if known[r.ID] {
				s.RoleHolders[r.ID] = append(s.RoleHolders[r.ID], u)
			}
		}
	}
	kept := s.Users[:0]
	for i, u := range s.Users {
		m := got[i]
		if m == nil {
			continue // deleted since the listing
		}
		kept = append(kept, u)
		hold(u.ID, m.RealmMappings)
		for _, c := range m.ClientMappings {
			hold(u.ID, c.Mappings)
		}
	}
	s.Users = kept
	return nil
}

// readGroups walks the tree: since Keycloak 23 the top level comes with
// subGroupCount and empty subGroups, and children are paged separately.
// Members are read once the tree is known, keycloak.concurrency groups at
// a time.
func (k *Keycloak) readGroups(ctx context.Context, s *Snapshot, o SnapshotOptions) error {
	report := o.report(PhaseGroups)
	top, _, err := pagesUpTo[Group](ctx, k, "list_groups", "/groups", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	queue := unique(top, func(g Group) string { return g.ID }, self[Group])
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		s.Groups = append(s.Groups, g)
		if g.SubGroupCount == 0 {
			continue
		}
		children, _, err := pagesUpTo[Group](ctx, k, "list_child_groups", "/groups/"+g.ID+"/children", url.Values{"briefRepresentation": {"false"}}, k.pageSize, 0, report)
		if err != nil {
			return fmt.Errorf("list children of %s: %w", g.Path, err)
		}
		for i := range children {
			children[i].ParentID = g.ID
			if children[i].Path == "" {
				children[i].Path = strings.TrimRight(g.Path, "/") + "/" + children[i].Name
			}
		}
		queue = append(queue, children...)
	}
	members := make([][]string, len(s.Groups))
	report = o.report(PhaseGroupMembers)
	err = k.forEach(ctx, len(s.Groups), func(ctx context.Context, i int) error {
		m, _, err := pagesUpTo[brief](ctx, k, "list_group_members", "/groups/"+s.Groups[i].ID+"/members", url.Values{"briefRepresentation": {"true"}}, k.pageSize, 0, report)
		if err != nil {
			return fmt.Errorf("list members of %s: %w", s.Groups[i].Path, err)
		}
		members[i] = ids(m)
		return nil
	})
	if err != nil {
		return err
	}
	for i, g := range s.Groups {
		s.GroupMembers[g.ID] = members[i]
	}
	return nil
}

// readIdentityProviders finds each user's linked identity provider with one
// search per provider instead of one request per user.
func (k *Keycloak) readIdentityProviders(ctx context.Context, s *Snapshot) error {
	var idps []struct {
		Alias string `json:"alias"`
	}
	if err := k.get(ctx, "list_identity_providers", "/identity-provider/instances", nil, &idps); err != nil {
		// Without view on identity providers (403) the column stays empty;
		// the rest of the snapshot is still whole. Any other failure fails
		// the run: an empty list would blank every person's provider.
		if errors.Is(err, ErrForbidden) {
			return nil
		}
		return fmt.Errorf("list identity providers: %w", err)
	}
	sort.Slice(idps, func(i, j int) bool { return idps[i].Alias < idps[j].Alias })
	linked := map[string]string{}
	for _, idp := range idps {
		us, err := pages[brief](ctx, k, "list_idp_users", "/users", url.Values{"idpAlias": {idp.Alias}, "briefRepresentation": {"true"}})
		if err != nil {
			return fmt.Errorf("list users of identity provider %s: %w", idp.Alias, err)
		}
		for _, u := range us {
			if _, ok := linked[u.ID]; !ok {
				linked[u.ID] = idp.Alias
			}
		}
	}
	for i := range s.Users {
		s.Users[i].IdentityProvider = linked[s.Users[i].ID]
	}
	return nil
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
