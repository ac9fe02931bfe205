package mapping_test

import (
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

func TestMayGrantOnlyWhatTheCallerHolds(t *testing.T) {
	endatix := engine(t, "endatix",
		mapping.Rule{RealmRole: "platform", GrantRole: "PlatformAdmin"},
		mapping.Rule{RealmRole: "admin", GrantRole: "Admin"},
		mapping.Rule{RealmRole: "creator", GrantRole: "Creator"})
	fastn := engine(t, "fastn",
		mapping.Rule{RealmRole: "owner", GrantRole: "Owner"},
		mapping.Rule{RealmRole: "viewer", GrantRole: "Viewer"},
		mapping.Rule{RealmRole: "operator", GrantRole: "Operator"})
	custom := func(e *mapping.Engine, perms ...string) mapping.Role {
		r, err := mapping.NewCustomRole(e, "Custom", "acme", perms)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		e      *mapping.Engine
		caller *mapping.Grant
		role   mapping.Role
		tenant string
		refuse string // "" when allowed, else part of the reason
	}{
		{"a tenant Admin makes someone a PlatformAdmin", endatix, subject(endatix, "a", "acme", "admin"), role(t, endatix, "PlatformAdmin"), "acme", "every tenant"},
		{"a tenant Admin makes someone an Admin", endatix, subject(endatix, "a", "acme", "admin"), role(t, endatix, "Admin"), "acme", ""},
		{"a tenant Admin makes someone a Creator", endatix, subject(endatix, "a", "acme", "admin"), role(t, endatix, "Creator"), "acme", ""},
		{"a tenant Admin writes platform.* into a custom role", endatix, subject(endatix, "a", "acme", "admin"), custom(endatix, "forms.view", "platform.tenants.manage"), "acme", `"platform.tenants.manage"`},
		{"a Creator makes someone an Admin", endatix, subject(endatix, "c", "acme", "creator"), role(t, endatix, "Admin"), "acme", "its tenant"},
		{"a PlatformAdmin makes someone a PlatformAdmin in another tenant", endatix, subject(endatix, "p", "acme", "platform"), role(t, endatix, "PlatformAdmin"), "globex", ""},
		{"an Owner makes someone a Developer", fastn, subject(fastn, "o", "acme", "owner"), role(t, fastn, "Developer"), "acme", ""},
		{"an Operator makes someone a Developer", fastn, subject(fastn, "op", "acme", "operator"), role(t, fastn, "Developer"), "acme", "you can grant only what you hold"},
		{"a Viewer makes someone a Viewer", fastn, subject(fastn, "v", "acme", "viewer"), role(t, fastn, "Viewer"), "acme", ""},
		{"an Owner grants in another tenant", fastn, subject(fastn, "o", "acme", "owner"), role(t, fastn, "Viewer"), "globex", "may not use in tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := tc.e.MayGrant(tc.caller, tc.role, tc.tenant, now)
			switch {
			case tc.refuse == "" && why != "":
				t.Fatalf("refused: %s", why)
			case tc.refuse != "" && !strings.Contains(why, tc.refuse):
				t.Fatalf("reason %q, want it refused with %q", why, tc.refuse)
			}
		})
	}
}
