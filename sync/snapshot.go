package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
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
}

// Snapshot reads the realm. Requests grow with pages, roles and groups,
// not with users: role holders and group members are read per role and per
// group instead of per user.
func (k *Keycloak) Snapshot(ctx context.Context, o SnapshotOptions) (*Snapshot, error) {
	before := k.Requests()
	s := &Snapshot{GroupMembers: map[string][]string{}, RoleHolders: map[string][]string{}}
	users, err := pages[User](ctx, k, "list_users", "/users", url.Values{"briefRepresentation": {"false"}})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	s.Users = unique(users, func(u User) string { return u.ID }, self[User])
	if err := k.readGroups(ctx, s); err != nil {
		return nil, err
	}
	realm, err := pages[Role](ctx, k, "list_realm_roles", "/roles", url.Values{"briefRepresentation": {"false"}})
	if err != nil {
		return nil, fmt.Errorf("list realm roles: %w", err)
	}
	for i := range realm {
		holders, err := pages[brief](ctx, k, "list_role_holders", "/roles/"+url.PathEscape(realm[i].Name)+"/users", url.Values{"briefRepresentation": {"true"}})
		if err != nil {
			return nil, fmt.Errorf("list holders of %s: %w", realm[i].Name, err)
		}
		s.RoleHolders[realm[i].ID] = ids(holders)
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
			roles, err := pages[Role](ctx, k, "list_client_roles", "/clients/"+c.ID+"/roles", url.Values{"briefRepresentation": {"false"}})
			if err != nil {
				return nil, fmt.Errorf("list roles of client %s: %w", clientID, err)
			}
			for i := range roles {
				roles[i].ClientID = clientID
				holders, err := pages[brief](ctx, k, "list_role_holders", "/clients/"+c.ID+"/roles/"+url.PathEscape(roles[i].Name)+"/users", url.Values{"briefRepresentation": {"true"}})
				if err != nil {
					return nil, fmt.Errorf("list holders of %s:%s: %w", clientID, roles[i].Name, err)
				}
				s.RoleHolders[roles[i].ID] = ids(holders)
			}
			s.Roles = append(s.Roles, roles...)
		}
	}
	for i := range s.Roles {
		if !s.Roles[i].Composite {
			continue
		}
		var children []Role
		if err := k.get(ctx, "list_composites", "/roles-by-id/"+s.Roles[i].ID+"/composites", nil, &children); err != nil {
			return nil, fmt.Errorf("list composites of %s: %w", s.Roles[i].Name, err)
		}
		for _, c := range children {
			s.Roles[i].Children = append(s.Roles[i].Children, c.ID)
		}
	}
	if err := k.readIdentityProviders(ctx, s); err != nil {
		return nil, err
	}
	if o.Organizations {
		orgs, err := pages[Org](ctx, k, "list_organizations", "/organizations", url.Values{"briefRepresentation": {"true"}})
		if err != nil {
			return nil, fmt.Errorf("list organizations: %w", err)
		}
		for i := range orgs {
			m, err := pages[brief](ctx, k, "list_organization_members", "/organizations/"+orgs[i].ID+"/members", nil)
			if err != nil {
				return nil, fmt.Errorf("list members of organization %s: %w", orgs[i].Alias, err)
			}
			orgs[i].Members = ids(m)
		}
		s.Orgs = orgs
	}
	s.Requests = k.Requests() - before
	return s, nil
}

// readGroups walks the tree: since Keycloak 23 the top level comes with
// subGroupCount and empty subGroups, and children are paged separately.
func (k *Keycloak) readGroups(ctx context.Context, s *Snapshot) error {
	top, err := pages[Group](ctx, k, "list_groups", "/groups", url.Values{"briefRepresentation": {"false"}})
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	queue := unique(top, func(g Group) string { return g.ID }, self[Group])
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		s.Groups = append(s.Groups, g)
		members, err := pages[brief](ctx, k, "list_group_members", "/groups/"+g.ID+"/members", url.Values{"briefRepresentation": {"true"}})
		if err != nil {
			return fmt.Errorf("list members of %s: %w", g.Path, err)
		}
		s.GroupMembers[g.ID] = ids(members)
		if g.SubGroupCount == 0 {
			continue
		}
		children, err := pages[Group](ctx, k, "list_child_groups", "/groups/"+g.ID+"/children", url.Values{"briefRepresentation": {"false"}})
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
