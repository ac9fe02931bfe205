package mapping_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

// A custom role's name travels in X-Auth-Roles, app.role and app.roles: it
// must not smuggle a separator (so one role reads as two), a reserved word
// (app.role = 'system') or a system role in another case.
func TestCustomRoleNamesCannotSmuggle(t *testing.T) {
	refused := []string{
		"Reader,PlatformAdmin", "Reader, PlatformAdmin", "system", "SYSTEM", "System", "owner", "Platformadmin",
		"PLATFORMADMIN", "platform", "Platform", "public", "authenticated", "admin", "end user",
		" x", "x ", "a\tb", "a\x00b", "a\nb", "a  b", `a"b`, `a\b`, "{a}", "a;b", "a|b", "a=b", "a'b",
		"", strings.Repeat("x", 65), "\u00a0x", "x\u200b", "-x", "x.",
	}
	for _, preset := range []string{"fastn", "endatix"} {
		e := engine(t, preset)
		for _, name := range refused {
			if r, err := mapping.NewCustomRole(e, name, "acme", []string{firstPermission(e)}); err == nil {
				t.Errorf("%s: custom role %q accepted as %q", preset, name, r.Name)
			}
		}
		for _, name := range []string{"Reader", "Release Manager", "Support-Lead", "ops_2", "v1.2", "Équipe Paie", "Leitung Büro", strings.Repeat("x", 64), "Platform Copy", "Systems"} {
			r, err := mapping.NewCustomRole(e, name, "acme", []string{firstPermission(e)})
			if err != nil || r.Name != name {
				t.Errorf("%s: custom role %q refused or renamed: %q %v", preset, name, r.Name, err)
			}
		}
	}
	// A system role's name in any case names the system role: refused as
	// such, with the role it collides with.
	e := engine(t, "endatix")
	if _, err := mapping.NewCustomRole(e, "Platformadmin", "acme", []string{"forms.view"}); !errors.Is(err, mapping.ErrReservedRoleName) || !strings.Contains(err.Error(), "PlatformAdmin") {
		t.Errorf("Platformadmin: %v", err)
	}
	if _, err := mapping.NewCustomRole(e, "Reader,PlatformAdmin", "acme", []string{"forms.view"}); !errors.Is(err, mapping.ErrInvalidRole) {
		t.Errorf("Reader,PlatformAdmin: %v", err)
	}
	// Duplicating a system role under a smuggling name is refused the same way.
	if _, err := mapping.DuplicateRole(e, "Creator", "Creator,PlatformAdmin", "acme"); err == nil {
		t.Error("duplicate as Creator,PlatformAdmin accepted")
	}
	if err := mapping.ValidateRoleEdit(e, mapping.Role{Name: "system", Kind: mapping.KindCustom, Tenant: "acme", Permissions: []string{"forms.view"}}); err == nil {
		t.Error("a custom role renamed to system accepted")
	}
}

// Rows already in the database that break the rule are not loaded into any
// grant: WithCustomRoles skips and reports them, never renames them.
func TestWithCustomRolesSkipsNamesThatBreakTheRule(t *testing.T) {
	e := engine(t, "endatix")
	e2, err := e.WithCustomRoles([]mapping.Role{
		{Name: "Reader", Tenant: "acme", Permissions: []string{"forms.view"}},
		{Name: "Reader,PlatformAdmin", Tenant: "acme", Permissions: []string{"forms.view"}},
		{Name: "system", Tenant: "acme", Permissions: []string{"forms.view"}},
		{Name: " Padded ", Tenant: "acme", Permissions: []string{"forms.view"}},
	})
	if err == nil || !strings.Contains(err.Error(), `"Reader,PlatformAdmin"`) || !strings.Contains(err.Error(), `"system"`) || !strings.Contains(err.Error(), `" Padded "`) {
		t.Fatalf("err = %v: each bad row must be reported by name", err)
	}
	for _, name := range []string{"Reader,PlatformAdmin", "system", " Padded ", "Padded"} {
		if _, ok := e2.Role(name, "acme"); ok {
			t.Errorf("%q loaded", name)
		}
	}
	if _, ok := e2.Role("Reader", "acme"); !ok {
		t.Error("the good row was dropped with the bad ones")
	}
	g := e2.Resolve(mapping.Facts{Subject: "v", Groups: []string{"/customers/acme"}},
		[]mapping.Assignment{{Role: "Reader,PlatformAdmin", Tenant: "acme"}, {Role: "system", Tenant: "acme"}, {Role: "Reader", Tenant: "acme"}}, now)
	for _, r := range g.Roles {
		if r != "Reader" && r != "Authenticated" {
			t.Errorf("grant roles %v: a refused row reached the grant", g.Roles)
		}
	}
	if g.PrimaryRole() != "Reader" {
		t.Errorf("primary role %q", g.PrimaryRole())
	}
}

func firstPermission(e *mapping.Engine) string { return e.Catalog().Permissions[0] }

// The rule itself, and the reserved names on top of it.
func TestValidRoleNameAndReservedNames(t *testing.T) {
	for _, tt := range []struct {
		name           string
		valid, custom  bool // ValidRoleName, ValidCustomRoleName
		reservedAsRole bool // refused as a preset role's name
	}{
		{"Reader", true, true, false},
		{"End User", true, false, true},
		{"Release Manager 2", true, true, false},
		{"ops-team_1.b", true, true, false},
		{"Équipe", true, true, false},
		{"Reader,PlatformAdmin", false, false, false},
		{"system", true, false, false},
		{"SYSTEM", true, false, false},
		{"platform", true, false, false},
		{"public", true, false, false},
		{"Authenticated", true, false, false},
		{"owner", true, false, true},
		{"Platformadmin", true, false, true},
		{"creator", true, false, true},
		{" x", false, false, false},
		{"x ", false, false, false},
		{"a\tb", false, false, false},
		{"a\x00b", false, false, false},
		{"a\x7fb", false, false, false},
		{"a  b", false, false, false},
		{"a\"b", false, false, false},
		{"a\xffb", false, false, false},
		{"", false, false, false},
		{strings.Repeat("é", 64), true, true, false},
		{strings.Repeat("é", 65), false, false, false},
	} {
		err := mapping.ValidRoleName(tt.name)
		if (err == nil) != tt.valid || (err != nil && (!errors.Is(err, mapping.ErrInvalidRole) || !errors.Is(err, mapping.ErrRoleName))) {
			t.Errorf("ValidRoleName(%q) = %v, want valid %v", tt.name, err, tt.valid)
		}
		err = mapping.ValidCustomRoleName(tt.name)
		if (err == nil) != tt.custom {
			t.Errorf("ValidCustomRoleName(%q) = %v, want valid %v", tt.name, err, tt.custom)
		}
		if tt.valid && !tt.custom && (!errors.Is(err, mapping.ErrReservedRoleName) || !errors.Is(err, mapping.ErrInvalidRole)) {
			t.Errorf("ValidCustomRoleName(%q) = %v, want ErrReservedRoleName", tt.name, err)
		}
		if tt.reservedAsRole && !strings.Contains(err.Error(), "preset role") {
			t.Errorf("ValidCustomRoleName(%q) = %v: name the preset role it collides with", tt.name, err)
		}
	}
	// Every preset's own role names follow the rule (End User's inner space
	// included), or New would refuse the preset.
	for _, p := range []string{"fastn", "endatix"} {
		for _, r := range engine(t, p).Roles() {
			if err := mapping.ValidRoleName(r.Name); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
	}
}

// Permission names share the guarantee: no separator, space or control
// character gets into a permission list either.
func TestPermissionNamesRefuseSeparators(t *testing.T) {
	for _, p := range []string{"forms.view,platform.tenants.manage", "forms.view ", " forms.view", "forms. view", "forms.vi\tew",
		"forms.vi\x00ew", "forms.\"view\"", "forms.view;x", "forms.view|x", "Forms.view", "forms.{view}", "forms.vïew"} {
		if mapping.ValidPermissionName(p) == nil {
			t.Errorf("permission %q accepted", p)
		}
	}
	if err := mapping.ValidPermissionName("submissions.delete.owned"); err != nil {
		t.Error(err)
	}
}
