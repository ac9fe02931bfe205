package mapping_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// The assignment ceiling: a caller grants only what it holds for good, or,
// holding it through a temporary assignment, only a temporary assignment
// that ends no later than its own (the earliest expiry among what the role
// needs).
func TestMayGrantUntilBoundsTemporaryHolders(t *testing.T) {
	fastn := engine(t, "fastn", mapping.Rule{RealmRole: "viewer", GrantRole: "Viewer"}, mapping.Rule{RealmRole: "admin", GrantRole: "Admin"})
	endatix := engine(t, "endatix", mapping.Rule{RealmRole: "platform", GrantRole: "PlatformAdmin"}, mapping.Rule{RealmRole: "creator", GrantRole: "Creator"})
	in10, in20, in5 := now.Add(10*time.Minute), now.Add(20*time.Minute), now.Add(5*time.Minute)
	temp := func(e *mapping.Engine, realmRole string, as ...mapping.Assignment) *mapping.Grant {
		return e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}, RealmRoles: []string{realmRole}}, as, now)
	}
	tempAdmin := temp(fastn, "viewer", mapping.Assignment{Role: "Admin", Tenant: "acme", Source: "local", ExpiresAt: in10})
	// Developer's permissions come through two temporary grants (Admin
	// until +10m, Developer until +20m): the later one counts for them.
	twoTemps := temp(fastn, "viewer", mapping.Assignment{Role: "Admin", Tenant: "acme", Source: "local", ExpiresAt: in10},
		mapping.Assignment{Role: "Developer", Tenant: "acme", Source: "local", ExpiresAt: in20})
	tempPlatform := temp(endatix, "creator", mapping.Assignment{Role: "PlatformAdmin", Source: "local", ExpiresAt: in10})
	permanentAdmin := temp(fastn, "admin")
	never := time.Time{}
	for _, tc := range []struct {
		name    string
		e       *mapping.Engine
		caller  *mapping.Grant
		role    string
		tenant  string
		expires time.Time
		refuse  string // "" when allowed, else part of the reason
	}{
		{"a temporary Admin grants Admin for good", fastn, tempAdmin, "Admin", "acme", never, "no later than"},
		{"a temporary Admin grants Developer for good", fastn, tempAdmin, "Developer", "acme", never, "no later than"},
		{"a temporary Admin grants Admin past its own expiry", fastn, tempAdmin, "Admin", "acme", in20, "after"},
		{"a temporary Admin grants Admin until its own expiry", fastn, tempAdmin, "Admin", "acme", in10, ""},
		{"a temporary Admin grants Developer for less", fastn, tempAdmin, "Developer", "acme", in5, ""},
		{"a temporary Admin grants Viewer, held for good, for good", fastn, tempAdmin, "Viewer", "acme", never, ""},
		{"Developer through two temporary grants, until the later", fastn, twoTemps, "Developer", "acme", in20, ""},
		{"Admin needs the earlier of the two", fastn, twoTemps, "Admin", "acme", in20, now.Add(10 * time.Minute).UTC().Format(time.RFC3339)},
		{"a temporary PlatformAdmin grants PlatformAdmin for good", endatix, tempPlatform, "PlatformAdmin", "globex", never, "no later than"},
		{"a temporary PlatformAdmin grants PlatformAdmin until its expiry", endatix, tempPlatform, "PlatformAdmin", "globex", in10, ""},
		{"a permanent Admin grants Admin for good", fastn, permanentAdmin, "Admin", "acme", never, ""},
		{"a permanent Admin grants Admin for a while", fastn, permanentAdmin, "Admin", "acme", in20, ""},
		{"a Viewer grants Admin for a while", fastn, temp(fastn, "viewer"), "Admin", "acme", in5, "you can grant only what you hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := tc.e.MayGrantUntil(tc.caller, role(t, tc.e, tc.role), tc.tenant, tc.expires, now)
			switch {
			case tc.refuse == "" && why != "":
				t.Fatalf("refused: %s", why)
			case tc.refuse != "" && !strings.Contains(why, tc.refuse):
				t.Fatalf("reason %q, want it refused with %q", why, tc.refuse)
			}
		})
	}
	// Once the temporary grant has run out, nothing of it can be granted.
	if why := fastn.MayGrantUntil(tempAdmin, role(t, fastn, "Admin"), "acme", in20, in10); why == "" {
		t.Fatal("an expired temporary Admin still grants Admin")
	}
}

// What a set of facts would grant (an invitation's Keycloak group with the
// roles it maps to, and the group rules) passes the same ceiling, role by
// role and for permissions given directly.
func TestMayGrantHeldJudgesWhatFactsGive(t *testing.T) {
	fastn := engine(t, "fastn", mapping.Rule{RealmRole: "fastn-admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "fastn-developer", GrantRole: "Developer"},
		mapping.Rule{Group: "/customers/*/admins", GrantRole: "Admin"}, mapping.Rule{Group: "/customers/*/billing", GrantPermissions: []string{"billing.manage"}},
		mapping.Rule{RealmRole: "fastn-operator", GrantRole: "Operator"})
	team := func(path string, realmRoles ...string) *mapping.Grant {
		return fastn.Resolve(mapping.Facts{Groups: []string{path}, RealmRoles: realmRoles}, nil, now)
	}
	developer := subject(fastn, "d", "acme", "fastn-developer")
	admin := subject(fastn, "a", "acme", "fastn-admin")
	operator := subject(fastn, "o", "acme", "fastn-operator")
	for _, tc := range []struct {
		name   string
		caller *mapping.Grant
		held   *mapping.Grant
		refuse string
	}{
		{"a group mapping fastn-admin, by a Developer", developer, team("/customers/acme/eng", "fastn-admin"), "role Admin"},
		{"a group an Admin rule matches, by a Developer", developer, team("/customers/acme/admins"), "role Admin"},
		{"a group a permission rule matches, by a Developer", developer, team("/customers/acme/billing"), `"billing.manage"`},
		{"a group mapping fastn-developer, by a Developer", developer, team("/customers/acme/eng", "fastn-developer"), ""},
		{"a group mapping fastn-developer, by an Operator", operator, team("/customers/acme/eng", "fastn-developer"), "role Developer"},
		{"a group mapping nothing, by an Operator", operator, team("/customers/acme/support"), ""},
		{"a group mapping fastn-admin, by an Admin", admin, team("/customers/acme/eng", "fastn-admin"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := fastn.MayGrantHeld(tc.caller, tc.held, "acme", time.Time{}, now)
			switch {
			case tc.refuse == "" && why != "":
				t.Fatalf("refused: %s", why)
			case tc.refuse != "" && !strings.Contains(why, tc.refuse):
				t.Fatalf("reason %q, want it refused with %q", why, tc.refuse)
			}
		})
	}
}
