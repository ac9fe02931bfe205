package mapping_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// treeEngine is the fastn preset over organizations and their customers
// (/customers/<name>): acme holds acme-eu and acme-us, globex holds
// globex-1, and lone is a customer of no organization.
func treeEngine(t *testing.T, orgRoles []string) *mapping.Engine {
	t.Helper()
	e, err := mapping.New(mapping.Config{Preset: "fastn",
		Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}, OrganizationRoles: orgRoles},
		Rules: []mapping.Rule{{RealmRole: "fastn-owner", GrantRole: "Owner"}, {RealmRole: "fastn-developer", GrantRole: "Developer"},
			{RealmRole: "fastn-viewer", GrantRole: "Viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	return e.WithTenantTree(mapping.NewTenantTree([]string{"acme", "globex"},
		map[string]string{"acme-eu": "acme", "acme-us": "acme", "globex-1": "globex", "lone": "nowhere"}))
}

type placed struct {
	tenant    string
	org       string
	customers []string
	roles     []string
}

func resolveIn(t *testing.T, e *mapping.Engine, f mapping.Facts, stored []mapping.Assignment, p mapping.Placement) (*mapping.Grant, placed) {
	t.Helper()
	g, err := e.ResolveIn(f, stored, now, p)
	if err != nil {
		t.Fatalf("named %q: %v", p.Named, err)
	}
	return g, placed{g.Tenant, g.Org, g.Customers, g.Roles}
}

func samePlace(a, b placed) bool {
	return a.tenant == b.tenant && a.org == b.org && slices.Equal(a.customers, b.customers) && slices.Equal(a.roles, b.roles)
}

// Issue 16: a role held at the organization level (fastn: Owner, Admin)
// holds in each customer of that organization, which the subject may then
// name; a role held in a customer stays there; nothing reaches another
// organization's customers.
func TestTreeOrganizationRolesReachTheirCustomers(t *testing.T) {
	e := treeEngine(t, nil)
	if got := e.OrganizationRoles(); !slices.Equal(got, []string{"Admin", "Owner"}) {
		t.Fatalf("fastn's organization roles: %v", got)
	}
	owner := mapping.Facts{Subject: "olivia", RealmRoles: []string{"fastn-owner"}, Organizations: []string{"acme"}}

	t.Run("an organization Owner acts in the organization and reads its customers", func(t *testing.T) {
		g, got := resolveIn(t, e, owner, nil, mapping.Placement{})
		if want := (placed{"acme", "acme", []string{"acme-eu", "acme-us"}, []string{"Owner"}}); !samePlace(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
		if !slices.Equal(g.Tenants, []string{"acme", "acme-eu", "acme-us"}) || g.TenantRequired {
			t.Errorf("tenants %v required %v", g.Tenants, g.TenantRequired)
		}
	})
	t.Run("and each of its customers, named", func(t *testing.T) {
		for _, c := range []string{"acme-eu", "acme-us"} {
			g, got := resolveIn(t, e, owner, nil, mapping.Placement{Named: c})
			if want := (placed{c, "acme", nil, []string{"Owner"}}); !samePlace(got, want) {
				t.Errorf("%s: got %+v, want %+v", c, got, want)
			}
			d := decide(e, g, mapping.Resource{}, "billing.manage")
			if !d.Allowed || !strings.Contains(d.Reason, `held in organization "acme"`) {
				t.Errorf("%s: %+v", c, d)
			}
		}
	})
	t.Run("never another organization's customer, nor one of none", func(t *testing.T) {
		for _, c := range []string{"globex-1", "lone", "globex"} {
			_, err := e.ResolveIn(owner, nil, now, mapping.Placement{Named: c})
			var te *mapping.TenantError
			if !errors.As(err, &te) || te.Tenant != c || te.Grant.Tenant != "acme" {
				t.Errorf("%s: %v", c, err)
			}
		}
	})
	t.Run("the same role held in a customer stays in it", func(t *testing.T) {
		inCustomer := mapping.Facts{Subject: "cora", RealmRoles: []string{"fastn-owner"}, Groups: []string{"/customers/acme-eu/ops"}}
		g, got := resolveIn(t, e, inCustomer, nil, mapping.Placement{})
		if want := (placed{"acme-eu", "", nil, []string{"Owner"}}); !samePlace(got, want) || !slices.Equal(g.Tenants, []string{"acme-eu"}) {
			t.Errorf("got %+v tenants %v, want %+v", got, g.Tenants, want)
		}
		for _, other := range []string{"acme", "acme-us"} {
			if _, err := e.ResolveIn(inCustomer, nil, now, mapping.Placement{Named: other}); err == nil {
				t.Errorf("a customer's Owner acts in %s", other)
			}
		}
	})
	t.Run("a customer-level Developer sees its customer only", func(t *testing.T) {
		dev := mapping.Facts{Subject: "dave", RealmRoles: []string{"fastn-developer"}, Groups: []string{"/customers/acme-us"}}
		g, got := resolveIn(t, e, dev, nil, mapping.Placement{})
		if want := (placed{"acme-us", "", nil, []string{"Developer"}}); !samePlace(got, want) || !slices.Equal(g.Tenants, []string{"acme-us"}) {
			t.Errorf("got %+v tenants %v, want %+v", got, g.Tenants, want)
		}
	})
	t.Run("a role that is not organization-level stays in the organization", func(t *testing.T) {
		orgDev := mapping.Facts{Subject: "eve", RealmRoles: []string{"fastn-developer"}, Organizations: []string{"acme"}}
		g, got := resolveIn(t, e, orgDev, nil, mapping.Placement{})
		if want := (placed{"acme", "acme", nil, []string{"Developer"}}); !samePlace(got, want) || !slices.Equal(g.Tenants, []string{"acme"}) {
			t.Errorf("got %+v tenants %v, want %+v", got, g.Tenants, want)
		}
		if _, err := e.ResolveIn(orgDev, nil, now, mapping.Placement{Named: "acme-eu"}); err == nil {
			t.Error("an organization Developer acts in a customer")
		}
	})
	t.Run("in a reached customer only the organization-level roles hold", func(t *testing.T) {
		// An Admin of acme by a stored assignment, Developer and Viewer
		// by realm roles: in acme all three, in its customer Admin only.
		f := mapping.Facts{Subject: "ada", RealmRoles: []string{"fastn-developer", "fastn-viewer"}}
		stored := []mapping.Assignment{{Role: "Admin", Tenant: "acme", Source: "local", Ref: "local assignment 7"}}
		_, got := resolveIn(t, e, f, stored, mapping.Placement{Synced: []string{"acme"}})
		if want := (placed{"acme", "acme", []string{"acme-eu", "acme-us"}, []string{"Admin", "Developer", "Viewer"}}); !samePlace(got, want) {
			t.Errorf("in acme: got %+v, want %+v", got, want)
		}
		g, got := resolveIn(t, e, f, stored, mapping.Placement{Named: "acme-eu", Synced: []string{"acme"}})
		if want := (placed{"acme-eu", "acme", nil, []string{"Admin"}}); !samePlace(got, want) {
			t.Errorf("in acme-eu: got %+v, want %+v", got, want)
		}
		if d := decide(e, g, mapping.Resource{}, "people.manage"); !d.Allowed || !strings.Contains(d.Reason, `local assignment 7 held in organization "acme"`) {
			t.Errorf("decision: %+v", d)
		}
	})
	t.Run("a member of the customer keeps its own roles beside the organization's", func(t *testing.T) {
		f := mapping.Facts{Subject: "max", RealmRoles: []string{"fastn-viewer"}, Organizations: []string{"acme"}, Groups: []string{"/customers/acme-eu"}}
		stored := []mapping.Assignment{{Role: "Owner", Tenant: "acme", Source: "local"}}
		_, got := resolveIn(t, e, f, stored, mapping.Placement{Named: "acme-eu"})
		if want := (placed{"acme-eu", "acme", nil, []string{"Owner", "Viewer"}}); !samePlace(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("an organization role held elsewhere reaches that organization only", func(t *testing.T) {
		f := mapping.Facts{Subject: "gil", RealmRoles: []string{"fastn-developer"}, Organizations: []string{"acme", "globex"}}
		stored := []mapping.Assignment{{Role: "Owner", Tenant: "globex", Source: "local"}}
		g, err := e.ResolveIn(f, stored, now, mapping.Placement{Named: "globex-1"})
		if err != nil || g.Org != "globex" || !slices.Equal(g.Roles, []string{"Owner"}) {
			t.Fatalf("globex-1: %v %+v", err, g)
		}
		if !slices.Equal(g.Tenants, []string{"acme", "globex", "globex-1"}) {
			t.Errorf("tenants %v", g.Tenants)
		}
		if _, err := e.ResolveIn(f, stored, now, mapping.Placement{Named: "acme-eu"}); err == nil {
			t.Error("globex's Owner acts in acme's customer")
		}
	})
	t.Run("a temporary organization role reaches until it expires", func(t *testing.T) {
		f := mapping.Facts{Subject: "tim", Organizations: []string{"acme"}}
		until := now.Add(time.Hour)
		stored := []mapping.Assignment{{Role: "Admin", Tenant: "acme", Source: "temporary", ExpiresAt: until}}
		g, err := e.ResolveIn(f, stored, now, mapping.Placement{Named: "acme-us"})
		if err != nil || g.Org != "acme" {
			t.Fatalf("%v %+v", err, g)
		}
		if d := e.Decide(g, mapping.Request{AnyOf: []string{"workflows.read"}, Now: until}); d.Allowed {
			t.Errorf("allowed after the organization role expired: %+v", d)
		}
		if _, err := e.ResolveIn(f, stored, until, mapping.Placement{Named: "acme-us"}); err == nil {
			t.Error("resolved in the customer after the organization role expired")
		}
	})
	t.Run("a rule pinned to another organization does not reach", func(t *testing.T) {
		pinned, err := mapping.New(mapping.Config{Preset: "fastn",
			Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
			Rules:  []mapping.Rule{{RealmRole: "globex-owner", GrantRole: "Owner", Tenant: "globex"}}})
		if err != nil {
			t.Fatal(err)
		}
		pinned = pinned.WithTenantTree(mapping.NewTenantTree([]string{"acme", "globex"}, map[string]string{"acme-eu": "acme", "globex-1": "globex"}))
		f := mapping.Facts{Subject: "pia", RealmRoles: []string{"globex-owner"}, Organizations: []string{"acme", "globex"}}
		g, err := pinned.ResolveIn(f, nil, now, mapping.Placement{Named: "globex-1"})
		if err != nil || !slices.Equal(g.Roles, []string{"Owner"}) || !slices.Equal(g.Tenants, []string{"acme", "globex", "globex-1"}) {
			t.Fatalf("%v %+v", err, g)
		}
	})
}

// The organization-level roles are config: organization_roles replaces the
// preset's, and an empty list makes every role stay where it is held.
func TestTreeOrganizationRolesFromConfig(t *testing.T) {
	admin := mapping.Facts{Subject: "ann", Organizations: []string{"acme"}}
	stored := []mapping.Assignment{{Role: "Admin", Tenant: "acme", Source: "local"}}
	for _, tc := range []struct {
		roles   []string
		reaches bool
	}{{nil, true}, {[]string{"Owner"}, false}, {[]string{}, false}, {[]string{"Admin", "Viewer"}, true}} {
		e := treeEngine(t, tc.roles)
		_, err := e.ResolveIn(admin, stored, now, mapping.Placement{Named: "acme-eu"})
		if (err == nil) != tc.reaches {
			t.Errorf("organization_roles %v: an acme Admin acting in acme-eu: %v", tc.roles, err)
		}
	}
}

// A flat tenancy is unchanged by a tree: organizations are tenants, and a
// role held in one reaches nothing.
func TestFlatTenancyIgnoresTheTree(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true},
		Rules: []mapping.Rule{{RealmRole: "fastn-owner", GrantRole: "Owner"}}})
	if err != nil {
		t.Fatal(err)
	}
	e = e.WithTenantTree(mapping.NewTenantTree([]string{"acme"}, map[string]string{"acme-eu": "acme"}))
	owner := mapping.Facts{Subject: "olivia", RealmRoles: []string{"fastn-owner"}, Organizations: []string{"acme"}}
	g, err := e.ResolveIn(owner, nil, now, mapping.Placement{})
	if err != nil || g.Tenant != "acme" || g.Org != "" || g.Customers != nil || !slices.Equal(g.Tenants, []string{"acme"}) {
		t.Fatalf("%v %+v", err, g)
	}
	if _, err := e.ResolveIn(owner, nil, now, mapping.Placement{Named: "acme-eu"}); err == nil {
		t.Error("a flat tenancy reached a customer")
	}
	if len(e.OrganizationRoles()) != 0 {
		t.Errorf("organization roles %v", e.OrganizationRoles())
	}
}

// The tree leaves out what it cannot place: a customer of an organization
// it does not know, and one that is itself an organization or its own.
func TestNewTenantTree(t *testing.T) {
	tr := mapping.NewTenantTree([]string{"acme", "globex"}, map[string]string{"a1": "acme", "a2": "acme", "x": "nowhere", "globex": "acme", "self": "self"})
	if !slices.Equal(tr.Customers("acme"), []string{"a1", "a2"}) || tr.Organization("a2") != "acme" {
		t.Errorf("acme: %v", tr.Customers("acme"))
	}
	for _, c := range []string{"x", "globex", "self", "acme"} {
		if tr.Organization(c) != "" {
			t.Errorf("%s placed in %q", c, tr.Organization(c))
		}
	}
	if !tr.IsOrganization("globex") || tr.IsOrganization("a1") || tr.Customers("globex") == nil {
		t.Error("organizations")
	}
	var none *mapping.TenantTree
	if none.IsOrganization("acme") || none.Organization("a1") != "" || none.Customers("acme") != nil {
		t.Error("a nil tree")
	}
}

// Config errors name their key.
func TestTreeConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		ts   mapping.TenantSource
		want string
	}{
		{"customers without organizations", mapping.TenantSource{Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
			"mapping.tenant.customers: customers belong to Keycloak organizations"},
		{"customers beside group_prefix", mapping.TenantSource{Organization: true, GroupPrefix: "/x", Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
			"mapping.tenant: set only one of"},
		{"a relative group_prefix", mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "customers"}},
			"mapping.tenant.customers.group_prefix: \"customers\" must be a group path"},
		{"a wildcard group_prefix", mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers/*"}},
			"mapping.tenant.customers.group_prefix: \"/customers/*\" must be a group path"},
		{"organization_roles of a flat tenancy", mapping.TenantSource{Organization: true, OrganizationRoles: []string{"Owner"}},
			"mapping.tenant.organization_roles: applies to a tree"},
		{"an unknown organization role", mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/c"}, OrganizationRoles: []string{"Owner", "Boss"}},
			"mapping.tenant.organization_roles[1]: \"Boss\" is not a system role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := mapping.Config{Preset: "fastn", Tenant: tt.ts}.Validate()
			if len(errs) == 0 || !strings.Contains(errors.Join(errs...).Error(), tt.want) {
				t.Errorf("errors %v, want one containing %q", errs, tt.want)
			}
		})
	}
	ok := mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}}}
	if errs := ok.Validate(); len(errs) != 0 {
		t.Errorf("the issue's shape: %v", errs)
	}
	if !ok.Tenant.Tree() || ok.Tenant.TenantGroupPrefix() != "/customers" {
		t.Errorf("tree %v, group prefix %q", ok.Tenant.Tree(), ok.Tenant.TenantGroupPrefix())
	}
}
