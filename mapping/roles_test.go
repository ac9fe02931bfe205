package mapping_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

func TestCustomRoleCreation(t *testing.T) {
	e := engine(t, "fastn")
	tests := []struct {
		name, role, tenant string
		perms              []string
		err                error
	}{
		{"catalog permissions", "Release Manager", "acme", []string{"workflows.deploy_prod", "workflows.read"}, nil},
		{"a name with a space", "Support Lead", "acme", []string{"people.view"}, nil},
		{"a system role's name", "Owner", "acme", []string{"workflows.read"}, mapping.ErrReservedRoleName},
		{"End User is a system role too", "End User", "acme", []string{"workflows.read"}, mapping.ErrReservedRoleName},
		{"a permission outside the catalog", "Rocketeer", "acme", []string{"rockets.launch"}, mapping.ErrUnknownPermission},
		{"another preset's permission", "Former", "acme", []string{"forms.create"}, mapping.ErrUnknownPermission},
		{"no permissions", "Empty", "acme", nil, mapping.ErrInvalidRole},
		{"no tenant", "Loose", "", []string{"workflows.read"}, mapping.ErrInvalidRole},
		{"no name", "  ", "acme", []string{"workflows.read"}, mapping.ErrInvalidRole},
		{"a control character", "Bad\nName", "acme", []string{"workflows.read"}, mapping.ErrInvalidRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := mapping.NewCustomRole(e, tt.role, tt.tenant, tt.perms)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && (r.Kind != mapping.KindCustom || r.Tenant != tt.tenant || !slices.Equal(r.Permissions, sorted(tt.perms...))) {
				t.Errorf("%+v", r)
			}
		})
	}
}

func TestDuplicateAsCustomCopiesPermissionsNotBypass(t *testing.T) {
	for _, tt := range []struct{ preset, system string }{{"fastn", "Developer"}, {"fastn", "End User"}, {"endatix", "Admin"}} {
		e := engine(t, tt.preset)
		dup, err := mapping.DuplicateRole(e, tt.system, tt.system+" Copy", "acme")
		if err != nil {
			t.Fatal(err)
		}
		if dup.BasedOn != tt.system || dup.Kind != mapping.KindCustom || dup.Bypass != "" ||
			!slices.Equal(dup.Permissions, role(t, e, tt.system).Permissions) {
			t.Errorf("%s: %+v", tt.system, dup)
		}
	}
	e := engine(t, "endatix")
	if _, err := mapping.DuplicateRole(e, "Authenticated", "Me Too", "acme"); !errors.Is(err, mapping.ErrUnknownRole) {
		t.Errorf("duplicating a pseudo role: %v", err)
	}
	if _, err := mapping.DuplicateRole(e, "Nope", "X", "acme"); !errors.Is(err, mapping.ErrUnknownRole) {
		t.Errorf("duplicating an unknown role: %v", err)
	}
}

func TestSystemRolesAreImmutable(t *testing.T) {
	e := engine(t, "endatix")
	for _, r := range e.Roles() {
		edited := r
		edited.Permissions = []string{"forms.view"}
		if err := mapping.ValidateRoleEdit(e, edited); !errors.Is(err, mapping.ErrImmutable) {
			t.Errorf("editing %s (%s): %v", r.Name, r.Kind, err)
		}
	}
	if err := mapping.ValidateRoleEdit(e, mapping.Role{Name: "fastn-viewer", Kind: mapping.KindKeycloak, Permissions: []string{"forms.view"}}); !errors.Is(err, mapping.ErrImmutable) {
		t.Errorf("editing a Keycloak role: %v", err)
	}
	if err := mapping.ValidateRoleEdit(e, mapping.Role{Name: "Reviewer", Kind: mapping.KindCustom, Tenant: "acme", Permissions: []string{"forms.view"}}); err != nil {
		t.Errorf("editing a custom role: %v", err)
	}
	if err := mapping.ValidateRoleEdit(e, mapping.Role{Name: "Reviewer", Kind: mapping.KindCustom, Tenant: "acme", Permissions: []string{"forms.fly"}}); !errors.Is(err, mapping.ErrUnknownPermission) {
		t.Errorf("editing a custom role to a foreign permission: %v", err)
	}
}

func TestCustomRolesWorkOnlyInTheirTenant(t *testing.T) {
	e := engine(t, "fastn")
	lite, err := mapping.NewCustomRole(e, "Lite", "acme", []string{"workflows.read"})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := e.WithCustomRoles([]mapping.Role{lite})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Role("Lite", "acme"); ok {
		t.Error("WithCustomRoles changed the engine it was called on")
	}
	in := e2.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}}, []mapping.Assignment{{Role: "Lite", Tenant: "acme", Source: "local"}}, now)
	if !in.Has("workflows.read", now) || in.Has("workflows.update", now) || in.PrimaryRole() != "Lite" {
		t.Errorf("in acme: roles %v permissions %v", in.Roles, in.Permissions)
	}
	out := e2.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/globex"}}, []mapping.Assignment{{Role: "Lite", Source: "local"}}, now)
	if out.Has("workflows.read", now) {
		t.Error("acme's custom role works in globex")
	}
	if got := e2.Roles(); got[len(got)-1].Name != "Lite" || got[len(got)-1].Kind != mapping.KindCustom {
		t.Errorf("Roles() = %v: custom roles come last", got)
	}
}

func TestWithCustomRolesSkipsBadRowsAndKeepsTheRest(t *testing.T) {
	e := engine(t, "fastn")
	e2, err := e.WithCustomRoles([]mapping.Role{
		{Name: "Good", Tenant: "acme", Permissions: []string{"tools.read"}},
		{Name: "Stale", Tenant: "acme", Permissions: []string{"tools.fly"}},
		{Name: "Good", Tenant: "acme", Permissions: []string{"tools.execute"}},
	})
	if err == nil || e2 == nil {
		t.Fatalf("err %v engine %v", err, e2)
	}
	if r, ok := e2.Role("Good", "acme"); !ok || !slices.Equal(r.Permissions, []string{"tools.read"}) {
		t.Errorf("Good = %+v %v", r, ok)
	}
	if _, ok := e2.Role("Stale", "acme"); ok {
		t.Error("a role with a permission outside the catalog was loaded")
	}
}

func TestPrimaryRoleFollowsThePresetsRank(t *testing.T) {
	e := engine(t, "endatix", mapping.Rule{RealmRole: "c", GrantRole: "Creator"}, mapping.Rule{RealmRole: "a", GrantRole: "Admin"})
	lite, _ := mapping.NewCustomRole(e, "Reviewer", "acme", []string{"forms.view"})
	e, _ = e.WithCustomRoles([]mapping.Role{lite})
	tests := []struct {
		name   string
		realm  []string
		stored []mapping.Assignment
		want   []string
	}{
		{"admin above creator whatever the rule order", []string{"c", "a"}, nil, []string{"Admin", "Creator", "Authenticated"}},
		{"custom below system, above pseudo", []string{"c"}, []mapping.Assignment{{Role: "Reviewer", Tenant: "acme"}}, []string{"Creator", "Reviewer", "Authenticated"}},
		{"custom alone is primary, not the pseudo role", nil, []mapping.Assignment{{Role: "Reviewer", Tenant: "acme"}}, []string{"Reviewer", "Authenticated"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := e.Resolve(mapping.Facts{Subject: "s", RealmRoles: tt.realm, Groups: []string{"/customers/acme"}}, tt.stored, now)
			if !slices.Equal(g.Roles, tt.want) || g.PrimaryRole() != tt.want[0] {
				t.Errorf("roles %v primary %q, want %v", g.Roles, g.PrimaryRole(), tt.want)
			}
		})
	}
}

func TestLastOwnerIsProtectedInFastnOnly(t *testing.T) {
	fastn, endatix := engine(t, "fastn"), engine(t, "endatix")
	tests := []struct {
		name     string
		e        *mapping.Engine
		owners   int
		removing bool
		err      error
	}{
		{"removing the only owner", fastn, 1, true, mapping.ErrLastOwner},
		{"removing one of two owners", fastn, 2, true, nil},
		{"changing a non-owner", fastn, 1, false, nil},
		{"endatix protects no role", endatix, 1, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := mapping.CheckLastOwner(tt.e, tt.owners, tt.removing); !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
		})
	}
	if mapping.ProtectedRole(fastn) != "Owner" || mapping.ProtectedRole(endatix) != "" {
		t.Error("protected roles")
	}
}

func TestEngineHandsOutCopies(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "x", GrantRole: "Viewer"})
	e.Roles()[0].Permissions[0] = "tampered"
	e.Catalog().Permissions[0] = "tampered"
	e.Catalog().Categories[0].Actions[0] = "tampered"
	e.Config().Rules[0].GrantRole = "Owner"
	if role(t, e, "Owner").Permissions[0] == "tampered" || e.Catalog().Permissions[0] == "tampered" || e.Catalog().Categories[0].Actions[0] == "tampered" {
		t.Error("a caller changed the engine through a returned slice")
	}
	if subject(e, "s", "acme", "x").HasRole("Owner") {
		t.Error("a caller changed the rules through Config()")
	}
}
