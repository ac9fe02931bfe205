package mapping_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// The active tenant of a request (issue 16): the one it names if the
// subject may act there, else the token's claim, else the only synced
// membership; several and no choice is TenantRequired, never the first.
func TestResolveInChoosesTheActiveTenant(t *testing.T) {
	stored := []mapping.Assignment{
		{Role: "Admin", Tenant: "globex", Source: "local", Ref: "local assignment g"},
		{Role: "Viewer", Tenant: "acme", Source: "local", Ref: "local assignment a"},
	}
	inAcme := mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}}
	inBoth := mapping.Facts{Subject: "s", Groups: []string{"/customers/globex", "/customers/acme"}}
	noClaim := mapping.Facts{Subject: "s"}
	tests := []struct {
		name     string
		facts    mapping.Facts
		p        mapping.Placement
		tenant   string
		required bool
		tenants  []string
		roles    []string
	}{
		{"the token's one tenant", inAcme, mapping.Placement{}, "acme", false, []string{"acme"}, []string{"Viewer"}},
		{"the token's claim beats the synced memberships", inAcme, mapping.Placement{Synced: []string{"globex", "acme"}}, "acme", false,
			[]string{"acme", "globex"}, []string{"Viewer"}},
		{"no claim: the one synced membership", noClaim, mapping.Placement{Synced: []string{"globex"}}, "globex", false,
			[]string{"globex"}, []string{"Admin"}},
		{"no claim, several memberships: none chosen", noClaim, mapping.Placement{Synced: []string{"globex", "acme"}}, "", true,
			[]string{"acme", "globex"}, nil},
		{"several in the claim: none chosen", inBoth, mapping.Placement{}, "", true, []string{"acme", "globex"}, nil},
		{"named among several synced", noClaim, mapping.Placement{Named: "globex", Synced: []string{"acme", "globex"}}, "globex", false,
			[]string{"acme", "globex"}, []string{"Admin"}},
		{"named against the token's claim, a synced membership", inAcme, mapping.Placement{Named: "globex", Synced: []string{"globex"}}, "globex", false,
			[]string{"acme", "globex"}, []string{"Admin"}},
		{"named from the token's claim alone", inBoth, mapping.Placement{Named: "acme"}, "acme", false, []string{"acme", "globex"}, []string{"Viewer"}},
		{"nothing at all", noClaim, mapping.Placement{}, "", false, nil, nil},
	}
	e := engine(t, "fastn")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := e.ResolveIn(tt.facts, stored, now, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if g.Tenant != tt.tenant || g.TenantRequired != tt.required || !slices.Equal(g.Tenants, tt.tenants) || !slices.Equal(g.Roles, tt.roles) {
				t.Errorf("tenant %q required %v tenants %v roles %v; want %q %v %v %v", g.Tenant, g.TenantRequired, g.Tenants, g.Roles,
					tt.tenant, tt.required, tt.tenants, tt.roles)
			}
		})
	}
}

// A tenant the subject is in neither by token nor by synced membership is
// refused, with the grant without the choice for the audit.
func TestResolveInRefusesATenantTheSubjectIsNotIn(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "dev", GrantRole: "Developer"})
	f := mapping.Facts{Subject: "s", RealmRoles: []string{"dev"}, Groups: []string{"/customers/acme"}}
	g, err := e.ResolveIn(f, nil, now, mapping.Placement{Named: "initech", Synced: []string{"globex"}})
	var te *mapping.TenantError
	if !errors.As(err, &te) || te.Tenant != "initech" || te.Grant != g || g == nil || g.Tenant != "acme" {
		t.Fatalf("err %v, grant %+v: want a TenantError for initech carrying the acme grant", err, g)
	}
	if !strings.Contains(err.Error(), `"initech"`) {
		t.Errorf("error %q does not name the tenant", err)
	}
	if g.MayActIn("initech") || !g.MayActIn("acme") || !g.MayActIn("globex") || g.MayActIn("") {
		t.Errorf("MayActIn disagrees with tenants %v", g.Tenants)
	}
}

// A grant without its tenant decides nothing, not even for a global bypass
// role: every check needs the tenant named first.
func TestTenantRequiredDeniesEveryCheck(t *testing.T) {
	e := engine(t, "endatix", mapping.Rule{RealmRole: "root", GrantRole: "PlatformAdmin"})
	f := mapping.Facts{Subject: "s", RealmRoles: []string{"root"}}
	g, err := e.ResolveIn(f, nil, now, mapping.Placement{Synced: []string{"acme", "globex"}})
	if err != nil || !g.TenantRequired {
		t.Fatalf("tenant required %v, err %v", g.TenantRequired, err)
	}
	if d := e.Decide(g, mapping.Request{AnyOf: []string{"forms.create"}, Now: now}); d.Allowed || d.Reason != mapping.TenantRequiredReason {
		t.Errorf("decision %+v, want a denial saying the tenant must be named", d)
	}
	g, err = e.ResolveIn(f, nil, now, mapping.Placement{Named: "globex", Synced: []string{"acme", "globex"}})
	if err != nil || g.Tenant != "globex" {
		t.Fatalf("named: %v %v", g.Tenant, err)
	}
	if d := e.Decide(g, mapping.Request{AnyOf: []string{"forms.create"}, Now: now}); !d.Allowed {
		t.Errorf("named tenant: %+v", d)
	}
}

// A subject in no tenant is still placed by the first matching pinned rule,
// and may name that tenant, not another.
func TestResolveInKeepsPinnedRulePlacement(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "globex-admin", GrantRole: "Admin", Tenant: "globex"})
	f := mapping.Facts{Subject: "s", RealmRoles: []string{"globex-admin"}}
	for _, named := range []string{"", "globex"} {
		g, err := e.ResolveIn(f, nil, now, mapping.Placement{Named: named})
		if err != nil || g.Tenant != "globex" || !g.HasRole("Admin") {
			t.Errorf("named %q: tenant %q roles %v err %v", named, g.Tenant, g.Roles, err)
		}
	}
	if _, err := e.ResolveIn(f, nil, now, mapping.Placement{Named: "acme"}); err == nil {
		t.Error("a pinned subject named another tenant and was placed there")
	}
}

// Resolve (sync's placement) is unchanged: the first tenant in sorted order.
func TestResolveStillPlacesSyncInTheFirstTenant(t *testing.T) {
	e := engine(t, "fastn")
	g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/globex", "/customers/acme"}}, nil, time.Time{})
	if g.Tenant != "acme" || g.TenantRequired {
		t.Errorf("tenant %q required %v", g.Tenant, g.TenantRequired)
	}
}

func TestValidTenantName(t *testing.T) {
	for _, ok := range []string{"acme", "ACME Corp", "café", "a-b_c.d"} {
		if err := mapping.ValidTenantName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a\x00b", "a\nb", "a\x7fb", "a\u0085b", "\xff", strings.Repeat("a", 256)} {
		if mapping.ValidTenantName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
