package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// tenantRow reads one tenant as sync wrote it into st.
func tenantRow(t *testing.T, st *store.Store, id string) store.TenantRow {
	t.Helper()
	var r store.TenantRow
	err := st.SysPool().QueryRow(context.Background(), `SELECT id, name, source, status, coalesce(keycloak_id, '') FROM tenants WHERE id = $1`, id).
		Scan(&r.ID, &r.Name, &r.Source, &r.Status, &r.KeycloakID)
	if err != nil {
		t.Fatalf("tenant %s: %v", id, err)
	}
	return r
}

// Issue 16: sync records the organization each tenant comes from
// (tenants.keycloak_id), its name, and whether it is disabled, by events as
// by a full run (step compares the two).
func TestSyncRecordsEachTenantsOrganization(t *testing.T) {
	f := newEventFixture(t, tenantsByOrganization, eventRealm)
	a := f.admin
	var org string
	rep := map[string]any{"name": "Initech", "alias": "initech"}
	f.step(t, "organization created", func() {
		_, h := a.Do("POST", "/organizations", rep, nil)
		org = created(h)
	})
	if got, want := tenantRow(t, f.a, "initech"), (store.TenantRow{ID: "initech", Name: "Initech", Source: "organization", Status: "active", KeycloakID: org}); got != want {
		t.Errorf("initech recorded as %+v, want %+v", got, want)
	}
	f.step(t, "organization disabled", func() {
		a.Do("PUT", "/organizations/"+org, map[string]any{"name": "Initech", "alias": "initech", "enabled": false}, nil)
	})
	if got := tenantRow(t, f.a, "initech"); got.Status != "disabled" || got.KeycloakID != org {
		t.Errorf("initech after its organization was disabled: %+v", got)
	}
	f.step(t, "organization enabled", func() {
		a.Do("PUT", "/organizations/"+org, map[string]any{"name": "Initech", "alias": "initech", "enabled": true}, nil)
	})
	if got := tenantRow(t, f.a, "initech"); got.Status != "active" {
		t.Errorf("initech after its organization was enabled again: %+v", got)
	}
}

// Issue 16: with a group tenant source, sync records the tenant's own group
// (tenants.keycloak_id), and reads its display name and disabled mark from
// the group's attributes, by events as by a full run.
func TestSyncRecordsEachTenantsGroup(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	acme := f.groupID(t, "/customers/acme")
	if got, want := tenantRow(t, f.a, "acme"), (store.TenantRow{ID: "acme", Name: "acme", Source: "group", Status: "active", KeycloakID: acme}); got != want {
		t.Errorf("acme recorded as %+v, want %+v", got, want)
	}
	mark := func(attrs map[string][]string) {
		var g map[string]any
		a.Do("GET", "/groups/"+acme, nil, &g)
		g["attributes"] = attrs
		delete(g, "subGroups")
		a.Do("PUT", "/groups/"+acme, g, nil)
	}
	f.step(t, "tenant group renamed and disabled", func() {
		mark(map[string][]string{mapping.GroupAttrTenantName: {"Acme Inc"}, mapping.GroupAttrTenantDisabled: {"true"}, "unrelated": {"x"}})
	})
	if got := tenantRow(t, f.a, "acme"); got.Name != "Acme Inc" || got.Status != "disabled" || got.KeycloakID != acme {
		t.Errorf("acme after its group was marked: %+v", got)
	}
	if paths := f.paths(t, "/customers/acme"); len(paths) != 1 || paths[0] != acme {
		t.Errorf("acme's group as a team: %v", paths)
	}
	f.step(t, "tenant group marks removed", func() { mark(map[string][]string{}) })
	if got := tenantRow(t, f.a, "acme"); got.Name != "acme" || got.Status != "active" {
		t.Errorf("acme after its group's marks were removed: %+v", got)
	}
}

// An attribute tenant comes from no Keycloak object: no keycloak_id.
func TestAttributeTenantsHaveNoKeycloakObject(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Attribute: "tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	snap := &ksync.Snapshot{Users: []ksync.User{{ID: "u1", Username: "amy", Enabled: true, Attributes: map[string][]string{"tenant": {"acme"}}}},
		Groups: []ksync.Group{{ID: "g1", Name: "acme", Path: "/acme"}}}
	want := ksync.Desired(snap, e, nil, time.Now())
	if len(want.Tenants) != 1 || want.Tenants[0] != (store.TenantRow{ID: "acme", Name: "acme", Source: "attribute", Status: "active"}) {
		t.Errorf("attribute tenants: %+v", want.Tenants)
	}
}
