package sync

import (
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Every resource path below is one Keycloak 26.5.6 wrote for the mutation
// named, read back from /admin-events of a throwaway realm.
func TestPlaceAdminEventNamesWhatToReRead(t *testing.T) {
	top, acme := "", "g-acme"
	for _, tt := range []struct {
		what string
		e    AdminEvent
		orgs bool
		want placement
	}{
		{"user created or updated", AdminEvent{ResourceType: "USER", OperationType: "UPDATE", ResourcePath: "users/u1"}, false, placement{users: []string{"u1"}}},
		{"identity provider linked", AdminEvent{ResourceType: "USER", OperationType: "CREATE", ResourcePath: "users/u1/federated-identity/github"}, false, placement{users: []string{"u1"}}},
		{"user logged out by an admin", AdminEvent{ResourceType: "USER", OperationType: "ACTION", ResourcePath: "users/u1/logout"}, false, placement{ignore: true}},
		{"group joined", AdminEvent{ResourceType: "GROUP_MEMBERSHIP", OperationType: "CREATE", ResourcePath: "users/u1/groups/g1"}, false, placement{users: []string{"u1"}}},
		{"realm role mapped", AdminEvent{ResourceType: "REALM_ROLE_MAPPING", OperationType: "CREATE", ResourcePath: "users/u1/role-mappings/realm"}, false, placement{users: []string{"u1"}}},
		{"client role unmapped", AdminEvent{ResourceType: "CLIENT_ROLE_MAPPING", OperationType: "DELETE", ResourcePath: "users/u1/role-mappings/clients/c1"}, false, placement{users: []string{"u1"}}},
		{"group's realm role", AdminEvent{ResourceType: "REALM_ROLE_MAPPING", OperationType: "CREATE", ResourcePath: "groups/g1/role-mappings/realm"}, false, placement{group: "g1", groupRoles: true}},
		{"group's client role", AdminEvent{ResourceType: "CLIENT_ROLE_MAPPING", OperationType: "CREATE", ResourcePath: "groups/g1/role-mappings/clients/c1"}, false, placement{group: "g1", groupRoles: true}},
		{"top-level group created, renamed or deleted", AdminEvent{ResourceType: "GROUP", OperationType: "UPDATE", ResourcePath: "groups/g1"}, false, placement{group: "g1"}},
		{"child created or moved in", AdminEvent{ResourceType: "GROUP", OperationType: "UPDATE", ResourcePath: "groups/g-acme/children"}, false, placement{children: &acme}},
		{"group moved to the top", AdminEvent{ResourceType: "GROUP", OperationType: "UPDATE", ResourcePath: "groups"}, false, placement{children: &top}},
		{"realm role renamed", AdminEvent{ResourceType: "REALM_ROLE", OperationType: "UPDATE", ResourcePath: "roles/old name"}, false, placement{role: &roleRef{name: "old name", update: true}}},
		{"realm role composite", AdminEvent{ResourceType: "REALM_ROLE", OperationType: "CREATE", ResourcePath: "roles/r1/composites"}, false, placement{role: &roleRef{name: "r1"}}},
		{"role by id", AdminEvent{ResourceType: "CLIENT_ROLE", OperationType: "DELETE", ResourcePath: "roles-by-id/r9/composites"}, false, placement{role: &roleRef{id: "r9"}}},
		{"client role", AdminEvent{ResourceType: "CLIENT_ROLE", OperationType: "CREATE", ResourcePath: "clients/c1/roles/cr1/composites"}, false, placement{role: &roleRef{client: "c1", name: "cr1"}}},
		{"client renamed", AdminEvent{ResourceType: "CLIENT", OperationType: "UPDATE", ResourcePath: "clients/c1"}, false, placement{clients: true}},
		{"organization renamed", AdminEvent{ResourceType: "ORGANIZATION", OperationType: "UPDATE", ResourcePath: "organizations/o1"}, true, placement{orgs: true}},
		{"organization without organization tenancy", AdminEvent{ResourceType: "ORGANIZATION", OperationType: "UPDATE", ResourcePath: "organizations/o1"}, false, placement{ignore: true}},
		{"member added (not named)", AdminEvent{ResourceType: "ORGANIZATION_MEMBERSHIP", OperationType: "CREATE", ResourcePath: "organizations/o1/members"}, true, placement{org: "o1"}},
		{"member removed", AdminEvent{ResourceType: "ORGANIZATION_MEMBERSHIP", OperationType: "DELETE", ResourcePath: "organizations/o1/members/u1"}, true, placement{users: []string{"u1"}}},
		{"identity provider deleted", AdminEvent{ResourceType: "IDENTITY_PROVIDER", OperationType: "DELETE", ResourcePath: "identity-provider/instances/github"}, false, placement{idp: "github"}},
		{"realm settings", AdminEvent{ResourceType: "REALM", OperationType: "UPDATE", ResourcePath: ""}, false, placement{ignore: true}},
		{"a partial import", AdminEvent{ResourceType: "REALM", OperationType: "UPDATE", ResourcePath: "users/u1"}, false, placement{fallback: FallbackRealmImport}},
		{"a type keybridge does not sync", AdminEvent{ResourceType: "AUTH_FLOW", OperationType: "UPDATE", ResourcePath: "authentication/flows/x"}, false, placement{ignore: true}},
		{"an unknown path", AdminEvent{ResourceType: "GROUP", OperationType: "UPDATE", ResourcePath: "attack-detection/brute-force"}, false, placement{fallback: FallbackUnknownPath}},
	} {
		if got := placeAdminEvent(tt.e, tt.orgs); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s (%s %s): got %+v, want %+v", tt.what, tt.e.ResourceType, tt.e.ResourcePath, got, tt.want)
		}
	}
}

// An event that cannot be placed asks for a full run and counts why, before
// reading Keycloak or the store (neither is configured here).
func TestUnplaceableEventCountsAFallbackWithItsReason(t *testing.T) {
	engine, err := mapping.New(mapping.Config{Preset: "fastn"})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	s := &Service{Engine: func() *mapping.Engine { return engine }, Metrics: m}
	for _, e := range []AdminEvent{
		{ResourceType: "USER", OperationType: "UPDATE", ResourcePath: "people/u1"},
		{ResourceType: "REALM", OperationType: "UPDATE", ResourcePath: "users/u1"},
		{ResourceType: "REALM", OperationType: "CREATE", ResourcePath: "groups/g1"},
	} {
		full, err := s.ApplyAdminEvent(t.Context(), e, "admin")
		if err != nil || !full {
			t.Fatalf("%+v: full %v, error %v; want a full run asked for", e, full, err)
		}
	}
	if n := testutil.ToFloat64(m.SyncFullFallbacks.WithLabelValues(FallbackUnknownPath)); n != 1 {
		t.Errorf("fallbacks for an unknown path = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.SyncFullFallbacks.WithLabelValues(FallbackRealmImport)); n != 2 {
		t.Errorf("fallbacks for a partial import = %v, want 2", n)
	}
	// An event about nothing keybridge syncs is neither applied nor a fallback.
	if full, err := s.ApplyAdminEvent(t.Context(), AdminEvent{ResourceType: "CLIENT_SCOPE", ResourcePath: "client-scopes/x"}, "admin"); full || err != nil {
		t.Errorf("an ignored event: full %v, error %v", full, err)
	}
	if n := testutil.CollectAndCount(m.SyncFullFallbacks); n != 2 {
		t.Errorf("%d fallback reasons counted, want 2", n)
	}
}

// A full run leaves alone the people, teams, roles and tenants an event
// wrote while it read Keycloak: its snapshot is older than they are.
func TestDiffLeavesRowsAnEventWroteDuringTheRun(t *testing.T) {
	role := func(name string) store.SyncRole {
		return store.SyncRole{Kind: "keycloak", Name: name, Status: "active"}
	}
	cur := &store.SyncState{
		Teams:       []store.TeamRow{{ID: "renamed", Path: "/new", Status: "active"}, {ID: "created", Path: "/created", Status: "active"}},
		Roles:       []store.SyncRole{role("parent"), role("child"), role("created")},
		Composites:  []store.CompositeRow{{Parent: "keycloak||parent", Child: "keycloak||child"}},
		Tenants:     []store.TenantRow{{ID: "acme", Name: "Acme Renamed", Status: "active"}, {ID: "new", Name: "new", Status: "active"}},
		People:      []store.PersonRow{{ID: "p", Status: "active"}},
		TeamMembers: []store.MemberRow{{Group: "renamed", Person: "p"}},
	}
	want := &store.SyncState{
		Teams:       []store.TeamRow{{ID: "renamed", Path: "/old", Status: "active"}},
		Roles:       []store.SyncRole{role("parent"), role("child")},
		Tenants:     []store.TenantRow{{ID: "acme", Name: "Acme", Status: "active"}},
		People:      []store.PersonRow{{ID: "p", Status: "active"}},
		TeamMembers: []store.MemberRow{{Group: "created", Person: "p"}},
		Assignments: []store.AssignmentRow{{Person: "p", Role: "keycloak||child", Source: "keycloak"}},
	}
	written := store.Written{People: []string{"p"}, Teams: []string{"renamed", "created"}, Roles: []string{"keycloak||parent", "keycloak||created"},
		Tenants: []string{"acme", "new"}}
	p := diff(cur, want, false, written)
	if !p.Empty() {
		t.Errorf("rows written after the snapshot were changed from it: %+v", p.SyncPlan)
	}
	p = diff(cur, want, false, store.Written{})
	if len(p.Teams) != 2 || len(p.Roles) != 1 || len(p.DelComposites) != 1 || len(p.Tenants) != 2 || len(p.AddTeamMembers) != 1 ||
		len(p.DelTeamMembers) != 1 || len(p.AddAssignments) != 1 {
		t.Errorf("without them written, the snapshot must be applied: %+v", p.SyncPlan)
	}
}

// Drift counts what came from Keycloak, not the permissions of keybridge's
// own roles.
func TestDriftCountsKeycloakChangesByKind(t *testing.T) {
	cur := &store.SyncState{Roles: []store.SyncRole{{Kind: "system", Name: "Viewer", Status: "active", Permissions: "a"}}}
	want := &store.SyncState{
		People: []store.PersonRow{{ID: "p", Status: "active"}},
		Roles: []store.SyncRole{{Kind: "system", Name: "Viewer", Status: "active", Permissions: "a,b"},
			{Kind: "keycloak", Name: "r", Status: "active"}},
		Assignments: []store.AssignmentRow{{Person: "p", Role: "keycloak||r", Source: "keycloak"}, {Person: "p", Role: "system||Viewer", Source: "rule"}},
	}
	got := Diff(cur, want, false).drift()
	if w := map[string]int{"people": 1, "roles": 1, "assignments": 2}; !reflect.DeepEqual(got, w) {
		t.Errorf("drift %v, want %v", got, w)
	}
}
