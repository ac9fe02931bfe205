package sync

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
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

// The plan matches rows through sorted indexes, not maps of keys: it must
// plan what the maps did, for rows in any order, with duplicates wanted
// twice, and leave its inputs alone unless it consumes them.
func TestSetDiffMatchesAMapOfKeys(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 7))
	row := func() store.AssignmentRow {
		return store.AssignmentRow{Person: fmt.Sprint("p", rnd.IntN(30)), Role: fmt.Sprint("keycloak||r", rnd.IntN(5)),
			Tenant: fmt.Sprint(rnd.IntN(2)), Source: "keycloak"}
	}
	key := func(a store.AssignmentRow) string {
		return a.Person + "\x00" + a.Role + "\x00" + a.Tenant + "\x00" + a.Source + "\x00" + a.Ref
	}
	compare := func(a, b store.AssignmentRow) int { return strings.Compare(key(a), key(b)) }
	for round := range 200 {
		var cur, want []store.AssignmentRow
		seen := map[string]bool{}
		for range rnd.IntN(60) {
			if r := row(); !seen[key(r)] { // the store holds each row once
				seen[key(r)] = true
				cur = append(cur, r)
			}
		}
		for range rnd.IntN(60) {
			want = append(want, row())
		}
		// What the maps gave: add in want's order, each once; del in cur's.
		inCur, inWant, added := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, x := range cur {
			inCur[key(x)] = true
		}
		for _, x := range want {
			inWant[key(x)] = true
		}
		var wantAdd, wantDel []store.AssignmentRow
		for _, x := range want {
			if !inCur[key(x)] && !added[key(x)] {
				added[key(x)] = true
				wantAdd = append(wantAdd, x)
			}
		}
		for _, x := range cur {
			if !inWant[key(x)] {
				wantDel = append(wantDel, x)
			}
		}
		curCopy, wantCopy := slices.Clone(cur), slices.Clone(want)
		add, del := setDiff(cur, want, false, compare)
		if !slices.Equal(add, wantAdd) || !slices.Equal(del, wantDel) {
			t.Fatalf("round %d: add %v del %v, want add %v del %v", round, add, del, wantAdd, wantDel)
		}
		if !slices.Equal(cur, curCopy) || !slices.Equal(want, wantCopy) {
			t.Fatalf("round %d: setDiff changed its inputs without consuming them", round)
		}
		add, del = setDiff(cur, want, true, compare)
		if !slices.Equal(add, wantAdd) || !slices.Equal(del, wantDel) {
			t.Fatalf("round %d, consuming: add %v del %v, want add %v del %v", round, add, del, wantAdd, wantDel)
		}
	}
}
