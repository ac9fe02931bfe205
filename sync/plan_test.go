package sync

import (
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
	p = Diff(cur, want, false)
	if len(p.People) != 1 || p.People[0].Status != "deleted" || len(p.DelTenantMembers) != 1 {
		t.Errorf("without keep, a person gone from Keycloak must be deleted: %+v", p.People)
	}
}
