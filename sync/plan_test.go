package sync

import (
	"reflect"
	"testing"

	"github.com/keybridge/keybridge/internal/store"
)

func TestDiffLeavesPeopleWrittenAfterTheSnapshot(t *testing.T) {
	cur := &store.SyncState{
		People:        []store.PersonRow{{ID: "old", Status: "active"}, {ID: "invited", Status: "invited"}},
		TenantMembers: []store.MemberRow{{Group: "acme", Person: "invited", Tenant: "acme"}},
	}
	want := &store.SyncState{People: []store.PersonRow{{ID: "old", Status: "active"}}}
	p := Diff(cur, want, false, "invited")
	if len(p.People) != 0 || len(p.DelTenantMembers) != 0 {
		t.Errorf("a person written after the snapshot was deactivated or stripped: %+v %+v", p.People, p.DelTenantMembers)
	}
	// A person an event disabled while the run read Keycloak is not written
	// back to the snapshot's "active".
	disabled := &store.SyncState{People: []store.PersonRow{{ID: "old", Status: "inactive"}}}
	if p := Diff(disabled, want, false, "old"); len(p.People) != 0 {
		t.Errorf("a person written after the snapshot was updated from it: %+v", p.People)
	}
	if p := Diff(disabled, want, false); len(p.People) != 1 || p.People[0].Status != "active" {
		t.Errorf("without keep, the snapshot's status must be applied: %+v", p.People)
	}
	p = Diff(cur, want, false)
	if len(p.People) != 1 || p.People[0].Status != "deleted" || len(p.DelTenantMembers) != 1 {
		t.Errorf("without keep, a person gone from Keycloak must be deleted: %+v", p.People)
	}
}

func TestDiffPlansEveryKind(t *testing.T) {
	cur := &store.SyncState{
		Tenants: []store.TenantRow{{ID: "acme", Name: "Acme", Status: "active"}, {ID: "gone", Status: "active"}, {ID: "dead", Status: "deleted"}},
		People: []store.PersonRow{{ID: "same", Status: "active"}, {ID: "renamed", Username: "a", Status: "active"},
			{ID: "left", Status: "active"}, {ID: "dead", Status: "deleted"}},
		Teams: []store.TeamRow{{ID: "t1", Name: "eng", Status: "active"}, {ID: "t2", Status: "active"}},
		Roles: []store.SyncRole{
			{Kind: "keycloak", Name: "dev", Status: "active"},
			{Kind: "keycloak", Name: "ops", Status: "active"},
			{Kind: "system", Name: "Owner", Permissions: "a,b", Status: "active"},
			{Kind: "system", Name: "Viewer", Permissions: "a", Status: "active"},
		},
	}
	want := &store.SyncState{
		Tenants: []store.TenantRow{{ID: "acme", Name: "ACME", Status: "active"}, {ID: "new", Status: "active"}},
		People:  []store.PersonRow{{ID: "same", Status: "active"}, {ID: "renamed", Username: "b", Status: "active"}, {ID: "new", Status: "active"}},
		Teams:   []store.TeamRow{{ID: "t1", Name: "eng", Status: "active"}},
		Roles: []store.SyncRole{
			{Kind: "keycloak", Name: "dev", Description: "developers", Status: "active"},
			{Kind: "system", Name: "Owner", Permissions: "a,b,c", Status: "active"}, // permissions only: no role update
			{Kind: "system", Name: "Viewer", Permissions: "a", Status: "active"},
			{Kind: "pseudo", Name: "Anyone", Permissions: "x", Status: "active"},
		},
	}
	p := Diff(cur, want, false)
	wantChanges := Changes{
		"tenants":          {"create": 1, "update": 1, "deactivate": 1},
		"people":           {"create": 1, "update": 1, "deactivate": 1},
		"teams":            {"deactivate": 1},
		"roles":            {"create": 1, "update": 1, "deactivate": 1},
		"role_permissions": {"update": 2},
	}
	if !reflect.DeepEqual(p.Changes, wantChanges) {
		t.Errorf("changes %v, want %v", p.Changes, wantChanges)
	}
	// The removal guard counts people, teams and Keycloak roles, never tenants or keybridge's own roles.
	if want := map[string]int{"people": 3, "teams": 2, "roles": 2}; !reflect.DeepEqual(p.Active, want) {
		t.Errorf("active %v, want %v", p.Active, want)
	}
	if want := map[string]int{"people": 1, "teams": 1, "roles": 1}; !reflect.DeepEqual(p.Removed, want) {
		t.Errorf("removed %v, want %v", p.Removed, want)
	}
	ids := func(rows []store.PersonRow) (s []string) {
		for _, r := range rows {
			s = append(s, r.ID+":"+r.Status)
		}
		return s
	}
	if got := ids(p.People); !reflect.DeepEqual(got, []string{"renamed:active", "new:active", "left:deleted"}) {
		t.Errorf("people written %v", got)
	}
	var perms []string
	for _, r := range p.PermissionChanges {
		perms = append(perms, r.Name)
	}
	if !reflect.DeepEqual(perms, []string{"Owner", "Anyone"}) {
		t.Errorf("permission changes %v, want Owner and Anyone", perms)
	}

	additive := Diff(cur, want, true)
	for kind, ops := range additive.Changes {
		if ops["deactivate"] != 0 {
			t.Errorf("additive plan deactivates %d %s", ops["deactivate"], kind)
		}
	}
	if len(additive.Removed) != 0 || len(additive.People) != 2 {
		t.Errorf("additive plan: removed %v, people %v", additive.Removed, ids(additive.People))
	}
}
