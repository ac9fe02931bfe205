package api_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// Issue 16, organization → customers tree, against real Keycloak and
// PostgreSQL: a platform caller invites into the customer acme-eu (the group
// /customers/acme-eu of the organization acme). The invitee is created in
// the customer's group, not in the organization (before, the invitation
// looked for a Keycloak organization named acme-eu and answered "no Keycloak
// organization"), and the next sync places the invitee in the customer.
func TestInviteTreeIntoACustomerJoinsItsGroup(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	rules := mapping.Config{Preset: "endatix",
		Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
		Rules:  []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}}}
	customer := func(name, org string) map[string]any {
		return map[string]any{"name": name, "attributes": map[string]any{ksync.AttrTenantOrganization: []any{org}}}
	}
	var org string
	e := newRealKCEnv(t, append(slices.Clone(testenv.SyncRoles), "manage-realm", "manage-users"), map[string]any{
		"organizationsEnabled": true,
		"roles":                realmRoles("platform", "admin"),
		"groups":               []any{map[string]any{"name": "customers", "subGroups": []any{customer("acme-eu", "acme")}}},
		"users":                []any{realmUser(kc, "amy", "admin")},
	}, rules, func(a *testenv.Admin) {
		org = createOrg(t, a, "acme", "Acme", "amy")
	})
	ctx := context.Background()

	var source, orgID string
	if err := e.st.SysPool().QueryRow(ctx, `SELECT source, coalesce(org_id, '') FROM tenants WHERE id = 'acme-eu'`).Scan(&source, &orgID); err != nil ||
		source != "group" || orgID != "acme" {
		t.Fatalf("the customer acme-eu after a sync: source %q org %q (%v), tenants %v", source, orgID, err, e.tenantRows(t))
	}

	root := caller{"root", "platform", "acme-eu"}
	code, out, body := e.do(t, root, "POST", "/v1/people/invite", map[string]any{"email": "vera@acme.test", "name": "Vera Test", "role": "Admin", "tenant": "acme-eu"})
	if code != http.StatusCreated {
		t.Fatalf("invite into the customer acme-eu: %d %s", code, body)
	}
	id, _ := out["id"].(string)
	if id == "" {
		t.Fatalf("no id in %s", body)
	}

	var groups []struct{ ID, Name, Path string }
	if code, _ := e.admin.Do("GET", "/users/"+id+"/groups", nil, &groups); code != http.StatusOK {
		t.Fatalf("the invitee's groups: %d", code)
	}
	if !slices.ContainsFunc(groups, func(g struct{ ID, Name, Path string }) bool { return g.Path == "/customers/acme-eu" }) {
		t.Errorf("the invitee %s is not in the customer's group /customers/acme-eu: %+v", id, groups)
	}
	var members []struct{ ID string }
	e.admin.Do("GET", "/organizations/"+org+"/members", nil, &members)
	if slices.ContainsFunc(members, func(m struct{ ID string }) bool { return m.ID == id }) {
		t.Errorf("the customer invitee %s was made a member of the organization acme: %+v", id, members)
	}

	// The next sync places the invitee in the customer from Keycloak's own record.
	e.resync(t)
	var tenants []string
	if err := e.st.SysPool().QueryRow(ctx, `SELECT tenant_ids FROM people WHERE id = $1`, id).Scan(&tenants); err != nil || !slices.Equal(tenants, []string{"acme-eu"}) {
		t.Errorf("the invitee's tenants after a sync: %v (%v), want [acme-eu]", tenants, err)
	}
}
