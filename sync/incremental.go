package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
)

// Incremental events. Each Keycloak admin event (polled or a webhook) is
// applied to the objects its resource path names, re-read from Keycloak:
// never from the event's representation. The people it touches are
// recomputed whole (their row, groups, role mappings, organizations,
// identity provider) through Desired, the function a full run uses, so an
// event leaves a person exactly as a full run would. A full run is asked for
// only when an event cannot be placed (fallback reasons below, counted in
// keybridge_sync_full_fallbacks_total).
//
// Resource paths, as Keycloak 26.5 writes them (checked against the server):
//
//	USER                     users/{id}, users/{id}/federated-identity/{alias}, users/{id}/logout, ...
//	GROUP_MEMBERSHIP         users/{id}/groups/{group}
//	REALM_ROLE_MAPPING       users/{id}/role-mappings/realm, groups/{group}/role-mappings/realm
//	CLIENT_ROLE_MAPPING      users/{id}/role-mappings/clients/{client}, groups/{group}/role-mappings/clients/{client}
//	GROUP                    groups/{group} (top-level create, rename, delete), groups/{parent}/children
//	                         (child created, or a group moved under parent), groups (a group moved to the top)
//	REALM_ROLE               roles/{name} (create; update, a rename named by the old name), roles/{name}/composites,
//	                         roles-by-id/{id}, roles-by-id/{id}/composites
//	CLIENT_ROLE              clients/{client}/roles/{name}[/composites], roles-by-id/{id}[/composites]
//	CLIENT                   clients/{client}
//	ORGANIZATION             organizations/{org}
//	ORGANIZATION_MEMBERSHIP  organizations/{org}/members (added; the user is not named), organizations/{org}/members/{id} (removed)
//	IDENTITY_PROVIDER        identity-provider/instances/{alias}
//	REALM                    a partial import: one event per object written, on the object's own path
//
// A move names the new parent, not the group moved, so the parent's children
// are compared with the store to find it; a rename or move changes the path
// of every group under it, so the group is re-read with its subtree.

// Reasons a full run is asked for instead.
const (
	// FallbackUnknownPath: a resource type keybridge syncs, on a path it
	// does not know.
	FallbackUnknownPath = "unknown_path"
	// FallbackRealmImport: a partial import, which can overwrite (delete
	// and create again under a new id) without naming what it deleted.
	FallbackRealmImport = "realm_import"
	// FallbackRoleUnknown: a role update whose role neither Keycloak nor
	// the store knows by that name: renamed away before it was ever read.
	FallbackRoleUnknown = "role_unknown"
	// FallbackTooManyPeople: re-reading everyone the event touches would
	// cost Keycloak more requests than a full run.
	FallbackTooManyPeople = "too_many_people"
	// FallbackClientRoles: roles that already existed came under a client
	// the mapping names (a client renamed or created with that clientId)
	// without events of their own, so who holds them is unknown.
	FallbackClientRoles = "client_roles"
	// FallbackApplyFailed: the re-read or the write failed (the poller;
	// a webhook delivery is answered 503 and delivered again instead).
	FallbackApplyFailed = "apply_failed"
)

// errFallback asks for a full run instead, for reason.
type errFallback struct{ reason string }

func (e errFallback) Error() string { return "a full sync is needed: " + e.reason }

// placement is what one admin event names, to be re-read.
type placement struct {
	ignore     bool   // nothing keybridge syncs changed
	fallback   string // a reason: a full run must cover it
	users      []string
	group      string  // a group to re-read with its subtree
	groupRoles bool    // and its role mappings changed: its subtree's members too
	children   *string // a parent whose direct children to compare ("" for the top level)
	role       *roleRef
	clients    bool   // the roles of the clients the mapping names
	org        string // an organization whose members to compare
	orgs       bool   // the organization list
	idp        string // an identity provider
}

// roleRef names a role by Keycloak id, or by name (with the client's
// internal id for a client role).
type roleRef struct {
	id, client, name string
	update           bool
}

// placeAdminEvent reads what an admin event names from its resource type,
// operation and path alone. orgs says whether organizations are synced
// (mapping.tenant.organization).
func placeAdminEvent(e AdminEvent, orgs bool) placement {
	path := strings.Trim(e.ResourcePath, "/")
	segs := strings.Split(path, "/")
	at := func(i int) string {
		if i < len(segs) {
			return segs[i]
		}
		return ""
	}
	unknown := placement{fallback: FallbackUnknownPath}
	ignore := placement{ignore: true}
	switch e.ResourceType {
	case "REALM":
		switch at(0) {
		case "users", "groups", "roles", "roles-by-id", "clients", "organizations", "identity-provider":
			return placement{fallback: FallbackRealmImport}
		}
		return ignore // realm settings
	case "USER", "GROUP_MEMBERSHIP", "REALM_ROLE_MAPPING", "CLIENT_ROLE_MAPPING", "GROUP", "REALM_ROLE", "CLIENT_ROLE",
		"CLIENT", "ORGANIZATION", "ORGANIZATION_MEMBERSHIP", "IDENTITY_PROVIDER":
	default:
		return ignore
	}
	switch at(0) {
	case "users":
		if at(1) == "" {
			return unknown
		}
		switch at(2) {
		case "", "groups", "role-mappings", "federated-identity":
			return placement{users: []string{at(1)}}
		}
		// Sessions, credentials, required-action emails, consents:
		// nothing keybridge syncs.
		return ignore
	case "groups":
		switch {
		case len(segs) == 1:
			top := ""
			return placement{children: &top}
		case at(1) == "":
			return unknown
		case len(segs) == 3 && at(2) == "children":
			parent := at(1)
			return placement{children: &parent}
		}
		return placement{group: at(1), groupRoles: at(2) == "role-mappings"}
	case "roles":
		name := roleName(strings.TrimPrefix(path, "roles/"))
		if len(segs) < 2 || name == "" {
			return unknown
		}
		return placement{role: &roleRef{name: name, update: e.OperationType == "UPDATE"}}
	case "roles-by-id":
		if at(1) == "" {
			return unknown
		}
		return placement{role: &roleRef{id: at(1), update: e.OperationType == "UPDATE"}}
	case "clients":
		switch {
		case at(1) == "":
			return unknown
		case len(segs) == 2:
			return placement{clients: true}
		case at(2) == "roles" && len(segs) > 3:
			name := roleName(strings.Join(segs[3:], "/"))
			return placement{role: &roleRef{client: at(1), name: name, update: e.OperationType == "UPDATE"}}
		}
		return ignore // mappers, secrets, scopes
	case "organizations":
		switch {
		case at(1) == "":
			return unknown
		case !orgs:
			return ignore // organizations are read only for organization tenancy
		case len(segs) == 2:
			return placement{orgs: true}
		case at(2) == "members" && len(segs) == 3:
			return placement{org: at(1)}
		case at(2) == "members" && len(segs) == 4 && at(3) != "invite-user" && at(3) != "invite-existing-user":
			return placement{users: []string{at(3)}}
		}
		return ignore // invitations, identity providers, domains
	case "identity-provider":
		switch {
		case at(1) == "instances" && at(2) != "" && len(segs) == 3:
			return placement{idp: at(2)}
		case at(1) == "instances" && at(2) != "":
			return ignore // mappers
		}
		return unknown
	}
	return unknown
}

// roleName cuts a role's sub-resource (composites, permissions, holders) off the
// rest of a path that starts with the role's name.
func roleName(rest string) string {
	for _, sub := range []string{"/composites", "/management/", "/users", "/groups"} {
		if i := strings.Index(rest, sub); i >= 0 {
			return rest[:i]
		}
	}
	return rest
}

// scope is what an incremental apply re-read from Keycloak and owns in the
// store: rows it may create, update, deactivate or remove.
type scope struct {
	people   map[string]bool // users recomputed whole
	teams    map[string]bool // team ids whose rows it owns: the groups re-read and those gone
	groups   []Group         // groups re-read, subtrees included
	roleKeys map[string]bool // Keycloak role keys (store.SyncRole.Key) whose rows and composites it owns
	fresh    []Role          // roles re-read
	gone     map[string]bool // Keycloak ids of roles gone from Keycloak
	tenants  map[string]bool // tenants that may have lost their last reason to exist
	orgs     []Org           // every organization, when orgList
	orgList  bool

	catalog  map[string]store.CatalogRole // the store's Keycloak roles by Keycloak id
	clientOf map[string]string            // client internal id -> clientId
}

func newScope() *scope {
	return &scope{people: map[string]bool{}, teams: map[string]bool{}, roleKeys: map[string]bool{}, gone: map[string]bool{},
		tenants: map[string]bool{}, clientOf: map[string]string{}}
}

func (sc *scope) addPeople(ids ...string) {
	for _, id := range ids {
		if id != "" {
			sc.people[id] = true
		}
	}
}

func roleKey(clientID, name string) string { return "keycloak|" + clientID + "|" + name }

// ApplyAdminEvent applies an admin change (polled or delivered by webhook)
// to what it names, re-reading it from Keycloak. It reports whether a full
// run is needed instead, having counted the reason; the caller asks for it.
// An error (Keycloak or the store failing) applied nothing.
func (s *Service) ApplyAdminEvent(ctx context.Context, e AdminEvent, source string) (bool, error) {
	p := placeAdminEvent(e, s.Engine().Config().Tenant.Organization)
	switch {
	case p.ignore:
		return false, nil
	case p.fallback != "":
		s.countFallback(ctx, p.fallback, e)
		return true, nil
	}
	sc, err := s.resolve(ctx, p)
	if err == nil {
		err = s.applyScope(ctx, sc)
	}
	var fb errFallback
	if errors.As(err, &fb) {
		s.countFallback(ctx, fb.reason, e)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("apply %s %s: %w", e.ResourceType, e.OperationType, err)
	}
	if e.Time > 0 {
		lag := s.now().Sub(time.UnixMilli(e.Time))
		if s.Metrics != nil {
			s.Metrics.EventApplyLag.WithLabelValues(source).Observe(lag.Seconds())
		}
		if s.onApplied != nil {
			s.onApplied(e, lag)
		}
	}
	return false, nil
}

func (s *Service) countFallback(ctx context.Context, reason string, e AdminEvent) {
	if s.Metrics != nil {
		s.Metrics.SyncFullFallbacks.WithLabelValues(reason).Inc()
	}
	if s.Log != nil {
		s.Log.InfoContext(ctx, "event asks for a full sync", "reason", reason, "resource_type", e.ResourceType, "operation", e.OperationType)
	}
}

// RefreshUser re-reads one user whole and applies it as a full run would:
// the person's row (a user gone from Keycloak becomes deleted), tenant and
// team memberships, and Keycloak and rule assignments.
func (s *Service) RefreshUser(ctx context.Context, id string) error {
	sc := newScope()
	sc.addPeople(id)
	if err := s.applyScope(ctx, sc); err != nil {
		return fmt.Errorf("refresh user %s: %w", id, err)
	}
	return nil
}

// resolve turns a placement into the scope to apply: what to re-read and
// whom it touches, from Keycloak and the store.
func (s *Service) resolve(ctx context.Context, p placement) (*scope, error) {
	sc := newScope()
	sc.addPeople(p.users...)
	sys := s.Store.SysPool()
	var err error
	switch {
	case p.group != "":
		err = s.resolveGroup(ctx, sc, p.group, p.groupRoles)
	case p.children != nil:
		err = s.resolveChildren(ctx, sc, *p.children)
	case p.role != nil || p.clients:
		if err = s.loadCatalog(ctx, sc); err != nil {
			return nil, err
		}
		if p.clients {
			err = s.resolveClients(ctx, sc)
		} else {
			err = s.resolveRole(ctx, sc, *p.role)
		}
	case p.org != "":
		err = s.resolveOrgMembers(ctx, sc, p.org)
	case p.orgs:
		err = s.resolveOrgs(ctx, sc)
	case p.idp != "":
		var linked []string
		linked, err = store.PeopleLinkedTo(ctx, sys, p.idp)
		sc.addPeople(linked...)
	}
	return sc, err
}

// resolveGroup re-reads a group and its subtree (none when it is gone),
// compares them and their members with the store, and takes in every member
// whose groups changed: all members of a group whose row changed (a rename
// or move changes paths, tenants and group rules), or of every group under
// it when its role mappings changed (children inherit them); otherwise who
// joined or left.
func (s *Service) resolveGroup(ctx context.Context, sc *scope, id string, rolesChanged bool) error {
	sys := s.Store.SysPool()
	var fresh []Group
	g, err := s.KC.group(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		if fresh, err = s.KC.subtree(ctx, *g); err != nil {
			return err
		}
	}
	old, err := store.TeamSubtree(ctx, sys, id)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(fresh)+len(old))
	for _, x := range fresh {
		ids = append(ids, x.ID)
	}
	for id := range old {
		ids = append(ids, id)
	}
	stored, err := store.TeamsByID(ctx, sys, ids)
	if err != nil {
		return err
	}
	dbMembers, err := store.MembersOfTeams(ctx, sys, ids)
	if err != nil {
		return err
	}
	kcMembers := make([][]string, len(fresh))
	err = s.KC.forEach(ctx, len(fresh), func(ctx context.Context, i int) error {
		m, err := s.KC.groupMembers(ctx, fresh[i])
		kcMembers[i] = m
		return err
	})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, x := range fresh {
		seen[x.ID] = true
		sc.teams[x.ID] = true
		row, had := stored[x.ID]
		changed := !had || row.Path != x.Path || row.Name != x.Name || row.ParentID != x.ParentID || row.Status != "active"
		if changed || rolesChanged {
			sc.addPeople(kcMembers[i]...)
			sc.addPeople(dbMembers[x.ID]...)
		} else {
			sc.addPeople(symmetricDifference(kcMembers[i], dbMembers[x.ID])...)
		}
		if had && changed && row.Tenant != "" {
			sc.tenants[row.Tenant] = true
		}
	}
	for id, row := range old {
		if seen[id] {
			continue
		}
		sc.teams[id] = true
		sc.addPeople(dbMembers[id]...)
		if row.Tenant != "" {
			sc.tenants[row.Tenant] = true
		}
	}
	sc.groups = append(sc.groups, fresh...)
	return nil
}

// resolveChildren compares a parent's direct children (the top level for
// "") with the store: a child created or moved in differs, and is re-read
// with its subtree.
func (s *Service) resolveChildren(ctx context.Context, sc *scope, parent string) error {
	children, err := s.KC.childGroups(ctx, parent)
	if errors.Is(err, ErrNotFound) {
		return nil // the parent is gone too: its own event covers it
	}
	if err != nil {
		return err
	}
	ids := make([]string, len(children))
	for i, c := range children {
		ids[i] = c.ID
	}
	stored, err := store.TeamsByID(ctx, s.Store.SysPool(), ids)
	if err != nil {
		return err
	}
	for _, c := range children {
		row, had := stored[c.ID]
		if had && row.Path == c.Path && row.Name == c.Name && row.ParentID == c.ParentID && row.Status == "active" {
			continue
		}
		if err := s.resolveGroup(ctx, sc, c.ID, false); err != nil {
			return err
		}
	}
	return nil
}

// loadCatalog reads the store's Keycloak roles, which role events are
// compared with and people are recomputed against.
func (s *Service) loadCatalog(ctx context.Context, sc *scope) error {
	if sc.catalog != nil {
		return nil
	}
	roles, err := store.KeycloakRoles(ctx, s.Store.SysPool())
	if err != nil {
		return err
	}
	sc.catalog = make(map[string]store.CatalogRole, len(roles))
	for _, r := range roles {
		sc.catalog[r.KeycloakID] = r
	}
	return nil
}

// resolveRole re-reads one role (found by id, by name, or, renamed, by the
// id the store knows for its old name) with its composites. Its holders are
// recomputed when it was renamed, deleted or its composites changed; the
// roles containing it are re-read when it was renamed or deleted.
func (s *Service) resolveRole(ctx context.Context, sc *scope, ref roleRef) error {
	configured := map[string]bool{}
	for _, c := range s.clients() {
		configured[c] = true
	}
	clientID := ""
	if ref.client != "" {
		c, err := s.clientIDOf(ctx, sc, ref.client)
		if errors.Is(err, ErrNotFound) {
			return s.resolveClients(ctx, sc) // the client is gone, and its roles with it
		}
		if err != nil {
			return err
		}
		if !configured[c] {
			return nil
		}
		clientID = c
	}
	var r *kcRole
	var err error
	switch {
	case ref.id != "":
		r, err = s.KC.roleByID(ctx, ref.id)
	case ref.client != "":
		r, err = s.KC.roleByName(ctx, "/clients/"+url.PathEscape(ref.client)+"/roles/"+url.PathEscape(ref.name))
	default:
		r, err = s.KC.roleByName(ctx, "/roles/"+url.PathEscape(ref.name))
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	var old *store.CatalogRole
	if r == nil {
		for _, c := range sc.catalog {
			if (ref.id != "" && c.KeycloakID == ref.id) || (ref.id == "" && c.ClientID == clientID && c.Name == ref.name) {
				old = &c
				break
			}
		}
		if old == nil {
			if ref.update && ref.id == "" {
				return errFallback{FallbackRoleUnknown}
			}
			return nil // created and gone again, or a role keybridge does not sync
		}
		if ref.id == "" {
			// Renamed: the update names the old name.
			if r, err = s.KC.roleByID(ctx, old.KeycloakID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	if r == nil {
		return s.roleGone(ctx, sc, *old)
	}
	fresh, ok, err := s.freshRole(ctx, sc, r, configured)
	if err != nil || !ok {
		return err
	}
	return s.roleChanged(ctx, sc, fresh)
}

// freshRole completes a role read from Keycloak: its client's clientId and
// its composites. ok is false for a role of a client the mapping does not
// name, which keybridge does not sync.
func (s *Service) freshRole(ctx context.Context, sc *scope, r *kcRole, configured map[string]bool) (Role, bool, error) {
	role := Role{ID: r.ID, Name: r.Name, Description: r.Description, Composite: r.Composite}
	if r.ClientRole {
		c, err := s.clientIDOf(ctx, sc, r.ContainerID)
		if errors.Is(err, ErrNotFound) {
			return role, false, nil
		}
		if err != nil {
			return role, false, err
		}
		if !configured[c] {
			return role, false, nil
		}
		role.ClientID = c
	}
	if role.Composite {
		children, err := s.KC.compositesOf(ctx, role.ID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return role, false, err
		}
		role.Children = children
	}
	return role, true, nil
}

// roleChanged takes in a role re-read from Keycloak: its row and composites,
// and, when it was renamed or its composites changed, everyone who holds it
// (the store keeps effective holdings: through groups and composites too).
func (s *Service) roleChanged(ctx context.Context, sc *scope, r Role) error {
	sc.fresh = append(sc.fresh, r)
	sc.roleKeys[roleKey(r.ClientID, r.Name)] = true
	old, had := sc.catalog[r.ID]
	if !had {
		return nil // new: nobody holds it yet, mappings come with their own events
	}
	sc.roleKeys[roleKey(old.ClientID, old.Name)] = true
	renamed := old.Name != r.Name || old.ClientID != r.ClientID
	var children []string
	for _, c := range r.Children {
		if _, known := sc.catalog[c]; known {
			children = append(children, c)
		}
	}
	sort.Strings(children)
	if !renamed && slices.Equal(children, slices.Sorted(slices.Values(old.Children))) {
		return nil // description or flags only
	}
	holders, err := store.RoleHolders(ctx, s.Store.SysPool(), []string{r.ID})
	if err != nil {
		return err
	}
	sc.addPeople(holders...)
	if renamed {
		return s.rereadParents(ctx, sc, r.ID)
	}
	return nil
}

// roleGone takes in a role gone from Keycloak: its row is deactivated, its
// holders recomputed, and the roles that contained it re-read.
func (s *Service) roleGone(ctx context.Context, sc *scope, old store.CatalogRole) error {
	sc.gone[old.KeycloakID] = true
	sc.roleKeys[roleKey(old.ClientID, old.Name)] = true
	holders, err := store.RoleHolders(ctx, s.Store.SysPool(), []string{old.KeycloakID})
	if err != nil {
		return err
	}
	sc.addPeople(holders...)
	return s.rereadParents(ctx, sc, old.KeycloakID)
}

// rereadParents re-reads the roles that contain child (by Keycloak id):
// their composite rows name it by key.
func (s *Service) rereadParents(ctx context.Context, sc *scope, child string) error {
	parents, err := store.RoleParents(ctx, s.Store.SysPool(), []string{child})
	if err != nil {
		return err
	}
	configured := map[string]bool{}
	for _, c := range s.clients() {
		configured[c] = true
	}
	for _, id := range parents {
		r, err := s.KC.roleByID(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // its own event covers it
		case err != nil:
			return err
		}
		fresh, ok, err := s.freshRole(ctx, sc, r, configured)
		if err != nil {
			return err
		}
		if ok {
			sc.fresh = append(sc.fresh, fresh)
			sc.roleKeys[roleKey(fresh.ClientID, fresh.Name)] = true
		}
	}
	return nil
}

// resolveClients compares the roles of every client the mapping names with
// the store: a client renamed or deleted takes its roles without an event
// per role, and their holders are recomputed. Roles a client brings (renamed
// or created under a clientId the mapping names) may be held already, by
// people the store cannot name: that asks for a full run.
func (s *Service) resolveClients(ctx context.Context, sc *scope) error {
	if err := s.loadCatalog(ctx, sc); err != nil {
		return err
	}
	configured := map[string]bool{}
	for _, c := range s.clients() {
		configured[c] = true
	}
	for _, clientID := range s.clients() {
		roles, err := s.KC.rolesOfClient(ctx, clientID)
		if err != nil {
			return err
		}
		listed := map[string]bool{}
		for _, r := range roles {
			listed[r.ID] = true
			old, had := sc.catalog[r.ID]
			if had && old.Name == r.Name && old.Description == r.Description && old.Composite == r.Composite && old.ClientID == clientID {
				continue
			}
			if !had {
				return errFallback{FallbackClientRoles}
			}
			r.ClientRole = false // the client is known
			fresh, _, err := s.freshRole(ctx, sc, &r, configured)
			if err != nil {
				return err
			}
			fresh.ClientID = clientID
			if err := s.roleChanged(ctx, sc, fresh); err != nil {
				return err
			}
		}
		for _, old := range sc.catalog {
			if old.ClientID == clientID && !listed[old.KeycloakID] {
				if err := s.roleGone(ctx, sc, old); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// resolveOrgMembers compares an organization's members with its tenant's:
// Keycloak's event for an added member does not name the user.
func (s *Service) resolveOrgMembers(ctx context.Context, sc *scope, id string) error {
	org, err := s.KC.organization(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return s.resolveOrgs(ctx, sc)
	}
	if err != nil {
		return err
	}
	members, err := s.KC.orgMembers(ctx, id)
	if err != nil {
		return err
	}
	stored, err := store.TenantMemberIDs(ctx, s.Store.SysPool(), org.Alias)
	if err != nil {
		return err
	}
	sc.addPeople(symmetricDifference(members, stored)...)
	return nil
}

// resolveOrgs re-reads the organization list: each organization's tenant is
// created or renamed, and the members of a tenant whose organization is
// gone are recomputed.
func (s *Service) resolveOrgs(ctx context.Context, sc *scope) error {
	orgs, err := s.KC.organizations(ctx)
	if err != nil {
		return err
	}
	sc.orgs, sc.orgList = orgs, true
	aliases := map[string]bool{}
	for _, o := range orgs {
		aliases[o.Alias] = true
	}
	sys := s.Store.SysPool()
	active, err := store.ActiveTenants(ctx, sys, "organization")
	if err != nil {
		return err
	}
	for _, t := range active {
		if aliases[t] {
			continue
		}
		sc.tenants[t] = true
		members, err := store.TenantMemberIDs(ctx, sys, t)
		if err != nil {
			return err
		}
		sc.addPeople(members...)
	}
	return nil
}

// eventRequestFloor is the Keycloak requests re-reading an event's people
// may always cost: about 400 people.
const eventRequestFloor = 2000

// tooCostly reports whether re-reading people (four or five requests each:
// the user, groups, role mappings, identity links, organizations) costs more
// Keycloak requests than a full run: the last one's, at least
// eventRequestFloor.
func (s *Service) tooCostly(ctx context.Context, people int) (bool, error) {
	per := int64(4)
	if s.Engine().Config().Tenant.Organization {
		per++
	}
	cost := int64(people) * per
	if cost <= eventRequestFloor {
		return false, nil
	}
	last, err := store.LastFullRunRequests(ctx, s.Store.SysPool())
	if err != nil {
		return false, err
	}
	return cost > max(last, eventRequestFloor), nil
}

// applyScope re-reads the people of sc, builds the part of a snapshot they
// and sc's groups, roles and organizations make, turns it into rows with
// Desired (as a full run does), and applies the difference to just the rows
// sc owns, in one transaction: all of it or, on any failure, nothing.
func (s *Service) applyScope(ctx context.Context, sc *scope) error {
	if costly, err := s.tooCostly(ctx, len(sc.people)); err != nil || costly {
		if costly {
			return errFallback{FallbackTooManyPeople}
		}
		return err
	}
	if len(sc.people) == 0 && len(sc.teams) == 0 && len(sc.roleKeys) == 0 && len(sc.tenants) == 0 && !sc.orgList {
		return nil
	}
	if err := s.loadCatalog(ctx, sc); err != nil {
		return err
	}
	snap, err := s.partialSnapshot(ctx, sc)
	if err != nil {
		return err
	}
	people := keys(sc.people)
	return pgx.BeginFunc(ctx, s.Store.SysPool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, applyLockKey); err != nil {
			return err
		}
		teams := keys(sc.teams)
		for _, g := range snap.Groups {
			if !sc.teams[g.ID] {
				teams = append(teams, g.ID)
			}
		}
		roles := keys(sc.roleKeys)
		var goneKeys []string
		for id := range sc.gone {
			if c, ok := sc.catalog[id]; ok {
				goneKeys = append(goneKeys, roleKey(c.ClientID, c.Name))
			}
		}
		cur, err := store.LoadSyncScope(ctx, tx, store.SyncScope{People: people, Teams: teams, Roles: roles, Children: goneKeys})
		if err != nil {
			return err
		}
		want := Desired(snap, s.Engine(), cur, s.now())
		s.restrict(sc, cur, want)
		if err := s.keepTenants(ctx, tx, sc, cur, want, people); err != nil {
			return err
		}
		if err := s.tenantTreeHolds(ctx, snap, cur, want); err != nil { // issue 16 (tenanttree.go)
			return err
		}
		plan := Diff(cur, want, s.Mode == "additive")
		if plan.Empty() {
			return nil
		}
		return store.ApplyIncrementalPlan(ctx, tx, &plan.SyncPlan)
	})
}

// restrict cuts the rows Desired made from a partial snapshot down to those
// sc owns: Keycloak roles and composites of the roles it re-read; teams it
// re-read, or new ones (a person's group the store lacks). Teams read only
// as a person's groups or their ancestors are left as stored, so a group
// stays consistent with the memberships of the people not re-read.
func (s *Service) restrict(sc *scope, cur, want *store.SyncState) {
	stored := map[string]bool{}
	for _, t := range cur.Teams {
		stored[t.ID] = true
	}
	want.Teams = filter(want.Teams, func(t store.TeamRow) bool { return sc.teams[t.ID] || !stored[t.ID] })
	cur.Teams = filter(cur.Teams, func(t store.TeamRow) bool { return sc.teams[t.ID] })
	want.Roles = filter(want.Roles, func(r store.SyncRole) bool { return r.Kind == "keycloak" && sc.roleKeys[r.Key()] })
	want.Composites = filter(want.Composites, func(c store.CompositeRow) bool { return sc.roleKeys[c.Parent] })
}

// keepTenants loads the tenants the apply may change (those Desired made
// and those sc may have left without a reason to exist) and keeps, as they
// are, those still named by a team or member outside sc's rows, or, while
// the organization list was re-read, by an organization.
func (s *Service) keepTenants(ctx context.Context, tx pgx.Tx, sc *scope, cur, want *store.SyncState, people []string) error {
	wanted := map[string]bool{}
	ids := make([]string, 0, len(want.Tenants)+len(sc.tenants))
	for _, t := range want.Tenants {
		wanted[t.ID] = true
		ids = append(ids, t.ID)
	}
	var candidates []string
	for t := range sc.tenants {
		if !wanted[t] {
			candidates = append(candidates, t)
			ids = append(ids, t)
		}
	}
	rows, err := store.LoadSyncScope(ctx, tx, store.SyncScope{Tenants: ids})
	if err != nil {
		return err
	}
	cur.Tenants = rows.Tenants
	if len(candidates) == 0 {
		return nil
	}
	var teams []string
	for _, t := range want.Teams {
		teams = append(teams, t.ID)
	}
	teams = append(teams, keys(sc.teams)...)
	used, err := store.TenantsInUse(ctx, tx, candidates, teams, people)
	if err != nil {
		return err
	}
	for _, t := range cur.Tenants {
		if used[t.ID] {
			want.Tenants = append(want.Tenants, t)
		}
	}
	return nil
}

// partialSnapshot reads everyone in sc whole and the groups they and sc
// need (every ancestor: roles are inherited from them, and a tenant is
// named after its own group), beside the store's roles overlaid with those
// sc re-read.
func (s *Service) partialSnapshot(ctx context.Context, sc *scope) (*Snapshot, error) {
	snap := &Snapshot{}
	orgs := s.Engine().Config().Tenant.Organization
	ids := keys(sc.people)
	var idps []string
	if len(ids) > 0 {
		var err error
		if idps, err = s.KC.identityProviders(ctx); err != nil {
			return nil, err
		}
	}
	reads := make([]personRead, len(ids))
	err := s.KC.forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		r, err := s.KC.readPerson(ctx, ids[i], orgs, idps)
		reads[i] = r
		return err
	})
	if err != nil {
		return nil, err
	}
	groups := map[string]Group{}
	var order []string
	addGroup := func(g Group) {
		if _, ok := groups[g.ID]; !ok {
			order = append(order, g.ID)
		}
		groups[g.ID] = g
	}
	for _, g := range sc.groups {
		addGroup(g)
	}
	orgByID := map[string]*Org{}
	var orgOrder []string
	for _, o := range sc.orgs {
		o := o
		orgByID[o.ID] = &o
		orgOrder = append(orgOrder, o.ID)
	}
	for _, r := range reads {
		if r.user == nil {
			continue
		}
		snap.Users = append(snap.Users, *r.user)
		for _, g := range r.groups {
			if _, ok := groups[g.ID]; !ok {
				addGroup(g)
			}
		}
		for _, o := range r.orgs {
			if orgByID[o.ID] == nil {
				o := o
				orgByID[o.ID] = &o
				orgOrder = append(orgOrder, o.ID)
			}
			orgByID[o.ID].Members = append(orgByID[o.ID].Members, r.user.ID)
		}
	}
	// Ancestors, level by level.
	for {
		var missing []string
		for _, id := range order {
			if p := groups[id].ParentID; p != "" {
				if _, ok := groups[p]; !ok && !slices.Contains(missing, p) {
					missing = append(missing, p)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		found := make([]*Group, len(missing))
		err := s.KC.forEach(ctx, len(missing), func(ctx context.Context, i int) error {
			g, err := s.KC.group(ctx, missing[i])
			if errors.Is(err, ErrNotFound) {
				// Deleted while read: the snapshot would be torn.
				return fmt.Errorf("group %s, an ancestor of a group read, is gone: %w", missing[i], err)
			}
			found[i] = g
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, g := range found {
			addGroup(*g)
		}
	}
	for _, id := range order {
		snap.Groups = append(snap.Groups, groups[id])
	}
	for _, id := range orgOrder {
		snap.Orgs = append(snap.Orgs, *orgByID[id])
	}
	// Roles: the store's, with those sc re-read in their place.
	fresh := map[string]bool{}
	freshKeys := map[string]bool{}
	for _, r := range sc.fresh {
		if !fresh[r.ID] {
			fresh[r.ID] = true
			freshKeys[r.Key()] = true
			snap.Roles = append(snap.Roles, r)
		}
	}
	for _, c := range sc.catalog {
		r := Role{ID: c.KeycloakID, Name: c.Name, Description: c.Description, Composite: c.Composite, ClientID: c.ClientID, Children: c.Children}
		if fresh[r.ID] || freshKeys[r.Key()] || sc.gone[r.ID] {
			continue
		}
		snap.Roles = append(snap.Roles, r)
	}
	// Each user's groups and direct roles, as indexes; a role the snapshot
	// lacks (of a client the mapping does not name) is no fact.
	groupAt := make(map[string]int32, len(snap.Groups))
	for i, g := range snap.Groups {
		groupAt[g.ID] = int32(i)
	}
	roleAt := make(map[string]int32, len(snap.Roles))
	for i, r := range snap.Roles {
		roleAt[r.ID] = int32(i)
	}
	n := 0
	for _, r := range reads {
		if r.user == nil {
			continue
		}
		u := &snap.Users[n]
		n++
		for _, g := range r.groups {
			if i, ok := groupAt[g.ID]; ok && !slices.Contains(u.Groups, i) {
				u.Groups = append(u.Groups, i)
			}
		}
		for _, role := range r.roles {
			if i, ok := roleAt[role]; ok && !slices.Contains(u.Roles, i) {
				u.Roles = append(u.Roles, i)
			}
		}
	}
	return snap, nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func symmetricDifference(a, b []string) []string {
	in := func(xs []string) map[string]bool {
		m := make(map[string]bool, len(xs))
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for _, x := range a {
		if !mb[x] {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if !ma[x] {
			out = append(out, x)
		}
	}
	return out
}

// Reads of single objects for incremental events.

// personRead is one user read whole; user is nil when Keycloak no longer
// has them (or they are a service account, which keybridge does not sync).
type personRead struct {
	user   *User
	groups []Group
	roles  []string // ids of the roles held directly
	orgs   []Org
}

// readPerson reads what a full run reads of one user: the user, their
// groups (with role mappings), their direct role mappings, the first of
// idps (identityProviders) they are linked to, and their organizations.
func (k *Keycloak) readPerson(ctx context.Context, id string, orgs bool, idps []string) (personRead, error) {
	u, err := k.User(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return personRead{}, nil
	case err != nil:
		return personRead{}, err
	case u.ServiceAccount != "":
		return personRead{}, nil
	}
	base := "/users/" + url.PathEscape(id)
	var r personRead
	gone := func(err error) (personRead, error) {
		if errors.Is(err, ErrNotFound) {
			return personRead{}, nil // deleted while read
		}
		return personRead{}, fmt.Errorf("read user %s: %w", u.Username, err)
	}
	if r.groups, err = pages[Group](ctx, k, "get_user_groups", base+"/groups", url.Values{"briefRepresentation": {"false"}}); err != nil {
		return gone(err)
	}
	var m struct {
		RealmMappings  []brief `json:"realmMappings"`
		ClientMappings map[string]struct {
			Mappings []brief `json:"mappings"`
		} `json:"clientMappings"`
	}
	if err := k.get(ctx, "get_user_role_mappings", base+"/role-mappings", nil, &m); err != nil {
		return gone(err)
	}
	for _, x := range m.RealmMappings {
		r.roles = append(r.roles, x.ID)
	}
	for _, c := range m.ClientMappings {
		for _, x := range c.Mappings {
			r.roles = append(r.roles, x.ID)
		}
	}
	var links []struct {
		IdentityProvider string `json:"identityProvider"`
	}
	if err := k.get(ctx, "get_user_identity_links", base+"/federated-identity", nil, &links); err != nil {
		return gone(err)
	}
	linked := map[string]bool{}
	for _, l := range links {
		linked[l.IdentityProvider] = true
	}
	for _, alias := range idps {
		if linked[alias] {
			u.IdentityProvider = alias
			break
		}
	}
	if orgs {
		if r.orgs, err = pages[Org](ctx, k, "get_user_organizations", "/organizations/members/"+url.PathEscape(id)+"/organizations", url.Values{"briefRepresentation": {"true"}}); err != nil {
			return gone(err)
		}
	}
	r.user = u
	return r, nil
}

// group reads one group with its role mappings.
func (k *Keycloak) group(ctx context.Context, id string) (*Group, error) {
	var g Group
	if err := k.get(ctx, "get_group", "/groups/"+url.PathEscape(id), nil, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// subtree reads a group and every group under it.
func (k *Keycloak) subtree(ctx context.Context, root Group) ([]Group, error) {
	out := []Group{root}
	for i := 0; i < len(out); i++ {
		if out[i].SubGroupCount == 0 {
			continue
		}
		children, err := k.childrenOf(ctx, out[i], nil)
		if err != nil {
			return nil, err
		}
		out = append(out, children...)
	}
	return out, nil
}

// childGroups lists a parent's direct children, or the top level for "".
func (k *Keycloak) childGroups(ctx context.Context, parent string) ([]Group, error) {
	if parent != "" {
		g, err := k.group(ctx, parent)
		if err != nil {
			return nil, err
		}
		return k.childrenOf(ctx, *g, nil)
	}
	top, err := pages[Group](ctx, k, "list_groups", "/groups", url.Values{"briefRepresentation": {"false"}})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return top, nil
}

// groupMembers lists the ids of a group's direct members.
func (k *Keycloak) groupMembers(ctx context.Context, g Group) ([]string, error) {
	m, err := pages[brief](ctx, k, "list_group_members", "/groups/"+url.PathEscape(g.ID)+"/members", url.Values{"briefRepresentation": {"true"}})
	if err != nil {
		return nil, fmt.Errorf("list members of %s: %w", g.Path, err)
	}
	return ids(m), nil
}

// kcRole is a role as Keycloak answers for one role.
type kcRole struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Composite   bool   `json:"composite"`
	ClientRole  bool   `json:"clientRole"`
	ContainerID string `json:"containerId"`
}

func (k *Keycloak) roleByID(ctx context.Context, id string) (*kcRole, error) {
	return k.roleByName(ctx, "/roles-by-id/"+url.PathEscape(id))
}

// roleByName reads the role at path (a role by name or by id); nil and
// ErrNotFound when it is gone.
func (k *Keycloak) roleByName(ctx context.Context, path string) (*kcRole, error) {
	var r kcRole
	if err := k.get(ctx, "get_role", path, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// compositesOf lists the ids of a composite role's direct children.
func (k *Keycloak) compositesOf(ctx context.Context, id string) ([]string, error) {
	var children []brief
	if err := k.get(ctx, "list_composites", "/roles-by-id/"+url.PathEscape(id)+"/composites", nil, &children); err != nil {
		return nil, fmt.Errorf("list composites of role %s: %w", id, err)
	}
	return ids(children), nil
}

// clientIDOf is the clientId of a client's internal id, cached in sc.
func (s *Service) clientIDOf(ctx context.Context, sc *scope, id string) (string, error) {
	if c, ok := sc.clientOf[id]; ok {
		return c, nil
	}
	var c struct {
		ClientID string `json:"clientId"`
	}
	if err := s.KC.get(ctx, "get_client", "/clients/"+url.PathEscape(id), nil, &c); err != nil {
		return "", err
	}
	sc.clientOf[id] = c.ClientID
	return c.ClientID, nil
}

// rolesOfClient lists the roles of the client with this clientId; none when
// there is no such client.
func (k *Keycloak) rolesOfClient(ctx context.Context, clientID string) ([]kcRole, error) {
	var clients []struct {
		ID       string `json:"id"`
		ClientID string `json:"clientId"`
	}
	if err := k.get(ctx, "find_client", "/clients", url.Values{"clientId": {clientID}}, &clients); err != nil {
		return nil, fmt.Errorf("find client %s: %w", clientID, err)
	}
	var out []kcRole
	for _, c := range clients {
		if c.ClientID != clientID {
			continue
		}
		roles, err := pages[kcRole](ctx, k, "list_client_roles", "/clients/"+url.PathEscape(c.ID)+"/roles", url.Values{"briefRepresentation": {"false"}})
		if err != nil {
			return nil, fmt.Errorf("list roles of client %s: %w", clientID, err)
		}
		out = append(out, roles...)
	}
	return out, nil
}

func (k *Keycloak) organization(ctx context.Context, id string) (*Org, error) {
	var o Org
	if err := k.get(ctx, "get_organization", "/organizations/"+url.PathEscape(id), nil, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

func (k *Keycloak) orgMembers(ctx context.Context, id string) ([]string, error) {
	m, err := pages[brief](ctx, k, "list_organization_members", "/organizations/"+url.PathEscape(id)+"/members", nil)
	if err != nil {
		return nil, fmt.Errorf("list members of organization %s: %w", id, err)
	}
	return ids(m), nil
}

func (k *Keycloak) organizations(ctx context.Context) ([]Org, error) {
	orgs, err := pages[Org](ctx, k, "list_organizations", "/organizations", url.Values{"briefRepresentation": {"true"}})
	if err != nil {
		return nil, fmt.Errorf("list organizations: %w", err)
	}
	return orgs, nil
}
