package sync

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// Keycloak role names are facts under Keycloak's rules, not keybridge role
// names: a realm role named "Reader,PlatformAdmin", "system" or even
// "PlatformAdmin" only ever matches mapping rules. Sync stores it as a
// Keycloak role and a keycloak-sourced assignment (which the directory never
// loads into a grant); the only keybridge roles it assigns are the system
// roles rules grant. So no Keycloak-sourced name reaches app.role, app.roles
// or X-Auth-Roles, and none needs renaming.
func TestKeycloakRoleNamesNeverBecomeKeybridgeRoles(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "creator", GrantRole: "Creator"}}})
	if err != nil {
		t.Fatal(err)
	}
	snap := &Snapshot{
		Users:  []User{{ID: "u1", Username: "victor", Enabled: true, Roles: []int32{0, 1, 2, 3, 4}, Groups: []int32{0}}},
		Groups: []Group{{ID: "g1", Name: "acme", Path: "/customers/acme"}},
		Roles: []Role{{ID: "r1", Name: "Reader,PlatformAdmin"}, {ID: "r2", Name: "system"}, {ID: "r3", Name: "PlatformAdmin"},
			{ID: "r4", Name: "creator"}, {ID: "r5", Name: "Admin", ClientID: "portal"}},
	}
	d := Desired(snap, e, nil, time.Now())
	var granted []string
	for _, a := range d.Assignments {
		switch {
		case a.Source == "rule" && strings.HasPrefix(a.Role, "system||"):
			granted = append(granted, strings.TrimPrefix(a.Role, "system||"))
		case a.Source == "keycloak" && strings.HasPrefix(a.Role, "keycloak|"):
		default:
			t.Errorf("assignment %+v: neither a Keycloak fact nor a rule's system role", a)
		}
	}
	if !slices.Equal(granted, []string{"Creator"}) {
		t.Errorf("keybridge roles assigned: %v, want only the rule's Creator", granted)
	}
	for _, r := range d.Roles {
		if r.Kind != "keycloak" && mapping.ValidRoleName(r.Name) != nil {
			t.Errorf("sync writes %s role %q", r.Kind, r.Name)
		}
	}
	g := e.Resolve(mapping.Facts{Subject: "u1", Groups: []string{"/customers/acme"},
		RealmRoles: []string{"Reader,PlatformAdmin", "system", "PlatformAdmin", "creator"}, ClientRoles: []string{"portal:Admin"}}, nil, time.Now())
	if !slices.Equal(g.Roles, []string{"Creator", "Authenticated"}) || g.PrimaryRole() != "Creator" || g.Global() {
		t.Errorf("token facts resolved to roles %v primary %q global %v", g.Roles, g.PrimaryRole(), g.Global())
	}
}
