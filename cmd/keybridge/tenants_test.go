package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

func tenantsCmd(ctx context.Context, args []string, out, errOut *bytes.Buffer) int {
	return runTenants(ctx, args, out, errOut)
}

// Issue 16: the operator CLI administers tenants through the same service
// as the API: create makes the tenant's group in Keycloak and records it,
// disable marks the group, list shows both.
func TestTenantsCommand(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, append(slices.Clone(testenv.SyncRoles), "manage-users"), nil)
	db := testenv.NewDatabase(t)
	for k, v := range map[string]string{"KEYBRIDGE_KEYCLOAK_URL": realm.URL, "KEYBRIDGE_KEYCLOAK_REALM": realm.Realm,
		"KEYBRIDGE_KEYCLOAK_CLIENT_ID": realm.ClientID, "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": realm.ClientSecret,
		"KEYBRIDGE_DATABASE_URL": db.AppURL, "KEYBRIDGE_DATABASE_SYNC_URL": db.SyncURL, "KEYBRIDGE_DATABASE_OWNER_URL": db.OwnerURL} {
		t.Setenv(k, v)
	}
	t.Setenv("KEYBRIDGE_CONFIG", writeFile(t, "keybridge.yaml", "mapping:\n  preset: fastn\n  tenant: {group_prefix: /customers}\n"))
	if code, out, errOut := run(t, tenantsCmd, "create", "--id", "initech", "--name", "Initech Ltd"); code != 0 {
		t.Fatalf("create: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run(t, tenantsCmd, "disable", "--id", "initech"); code != 0 {
		t.Fatalf("disable: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := run(t, tenantsCmd, "create", "--id", "initech"); code != 1 {
		t.Errorf("create twice: %d %s", code, errOut)
	}
	code, out, errOut := run(t, tenantsCmd, "list", "-o", "json")
	var list []struct {
		ID, Name, Source, Status string
		KeycloakID               string `json:"keycloak_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("list: %d %s %s", code, out, errOut)
	}
	var g struct {
		ID         string
		Attributes map[string][]string
	}
	testenv.NewAdmin(t, realm).Do("GET", "/group-by-path/customers/initech", nil, &g)
	if l := list[0]; l.ID != "initech" || l.Name != "Initech Ltd" || l.Source != "group" || l.Status != "disabled" || l.KeycloakID != g.ID ||
		!slices.Equal(g.Attributes[mapping.GroupAttrTenantDisabled], []string{"true"}) {
		t.Errorf("listed %+v; the group in Keycloak %+v", l, g)
	}
}
