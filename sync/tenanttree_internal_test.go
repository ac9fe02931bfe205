package sync

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

func treeConfig() mapping.Config {
	return mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
		Rules: []mapping.Rule{{RealmRole: "fastn-owner", GrantRole: "Owner"}}}
}

// customerGroup decodes a group as Keycloak answers it, attributes and all.
func customerGroup(t *testing.T, id, path, parent string, orgs ...string) Group {
	t.Helper()
	name := path[strings.LastIndex(path, "/")+1:]
	raw, _ := json.Marshal(map[string]any{"id": id, "name": name, "path": path, "parentId": parent,
		"attributes": map[string][]string{AttrTenantOrganization: orgs, "unrelated": {"x"}}})
	var g Group
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// Issue 16: in a tenant tree, sync stores organizations and customers as
// tenants, each customer with the organization its group names, and
// memberships of both levels; a customer's group that names none, several
// or itself places it in no organization.
func TestDesiredStoresTheTenantTree(t *testing.T) {
	e, err := mapping.New(treeConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := &Snapshot{
		Groups: []Group{
			customerGroup(t, "g0", "/customers", ""),
			customerGroup(t, "g1", "/customers/acme-eu", "g0", "acme"),
			customerGroup(t, "g2", "/customers/lone", "g0"),
			customerGroup(t, "g3", "/customers/self", "g0", "self"),
			customerGroup(t, "g4", "/customers/acme-eu/ops", "g1", "globex"), // not a customer's own group
			customerGroup(t, "g5", "/staff", "", "acme"),
		},
		Orgs:  []Org{{ID: "o1", Alias: "acme", Name: "Acme", Members: []string{"u1"}}},
		Users: []User{{ID: "u1", Username: "olivia", Enabled: true}, {ID: "u2", Username: "dave", Enabled: true, Groups: []int32{4}}},
	}
	d := Desired(s, e, nil, time.Now())
	got := map[string]store.TenantRow{}
	for _, r := range d.Tenants {
		got[r.ID] = r
	}
	for id, want := range map[string][2]string{"acme": {"organization", ""}, "acme-eu": {"group", "acme"}, "lone": {"group", ""}, "self": {"group", ""}} {
		if r, ok := got[id]; !ok || r.Source != want[0] || r.OrgID != want[1] {
			t.Errorf("tenant %s: %+v, want source %s org %q", id, r, want[0], want[1])
		}
	}
	if len(got) != 4 {
		t.Errorf("tenants %v", d.Tenants)
	}
	members := map[string]string{}
	for _, m := range d.TenantMembers {
		members[m.Person] += m.Tenant
	}
	if members["u1"] != "acme" || members["u2"] != "acme-eu" {
		t.Errorf("memberships %v", members)
	}
	for _, team := range d.Teams {
		if team.ID == "g4" && team.Tenant != "acme-eu" {
			t.Errorf("team %+v", team)
		}
	}
	if err := checkTenantTree(s, e.Config().Tenant); err != nil {
		t.Errorf("a tree without ambiguity refused: %v", err)
	}
	// A flat tenancy over the same realm has no customers.
	flat, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}})
	if err != nil {
		t.Fatal(err)
	}
	if d := Desired(s, flat, nil, time.Now()); len(d.Tenants) != 1 || d.Tenants[0].OrgID != "" || d.Tenants[0].Source != "organization" {
		t.Errorf("flat: %+v", d.Tenants)
	}
}

// A tree sync cannot read unambiguously is refused whole, naming the group;
// an event that would turn an organization into a customer or back is left
// to a full run.
func TestTenantTreeRefusesAmbiguity(t *testing.T) {
	ts := treeConfig().Tenant
	s := &Snapshot{
		Groups: []Group{customerGroup(t, "g0", "/customers", ""), customerGroup(t, "g1", "/customers/acme", "g0", "globex"),
			customerGroup(t, "g2", "/customers/two", "g0", "acme", "globex", "acme")},
		Orgs: []Org{{Alias: "acme"}, {Alias: "globex"}},
	}
	err := checkTenantTree(s, ts)
	if !errors.Is(err, ErrTenantTree) || !strings.Contains(err.Error(), `customer group /customers/acme and organization acme would both be tenant "acme"`) ||
		!strings.Contains(err.Error(), "/customers/two names 2 organizations in keybridge.tenant.organization (acme, globex)") {
		t.Errorf("%v", err)
	}
	if err := checkTenantTree(s, mapping.TenantSource{GroupPrefix: "/customers"}); err != nil {
		t.Errorf("a flat tenancy: %v", err)
	}
	cur := []store.TenantRow{{ID: "acme", Source: "organization", Status: "active"}, {ID: "eu", Source: "group", Status: "active"},
		{ID: "old", Source: "organization", Status: "deleted"}}
	for _, tc := range []struct {
		want []store.TenantRow
		ok   bool
	}{
		{[]store.TenantRow{{ID: "acme", Source: "group"}}, false},
		{[]store.TenantRow{{ID: "eu", Source: "organization"}}, false},
		{[]store.TenantRow{{ID: "acme", Source: "organization"}, {ID: "eu", Source: "group", OrgID: "acme"}, {ID: "old", Source: "group"}}, true},
	} {
		if err := checkTenantRows(cur, tc.want, ts); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrTenantTree)) {
			t.Errorf("%+v: %v", tc.want, err)
		}
	}
	if err := checkTenantRows(cur, []store.TenantRow{{ID: "acme", Source: "group"}}, mapping.TenantSource{GroupPrefix: "/c"}); err != nil {
		t.Errorf("a flat tenancy: %v", err)
	}
	// The marks keep the organization through an encoding round trip (a
	// group held in a partial snapshot).
	g := customerGroup(t, "g", "/customers/x", "", "acme")
	raw, _ := json.Marshal(g)
	var back Group
	if err := json.Unmarshal(raw, &back); err != nil || !slices.Equal(back.Marks.Organizations, []string{"acme"}) {
		t.Errorf("%s: %+v %v", raw, back.Marks, err)
	}
}
