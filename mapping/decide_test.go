package mapping_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

func TestExplanations(t *testing.T) {
	fastn := engine(t, "fastn",
		mapping.Rule{RealmRole: "fastn-admin", GrantRole: "Admin"},
		mapping.Rule{ClientRole: "portal:dev", GrantRole: "Viewer"},
		mapping.Rule{RealmRole: "fastn-developer", GrantRole: "Developer"},
		mapping.Rule{Claim: "department", Equals: ptr("ops"), GrantPermissions: []string{"billing.view"}})
	endatix := engine(t, "endatix", mapping.Rule{RealmRole: "admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "creator", GrantRole: "Creator"})
	dev := fastn.Resolve(mapping.Facts{Subject: "dana", RealmRoles: []string{"fastn-developer"}, Groups: []string{"/customers/acme"},
		Attributes: map[string][]string{"department": {"ops"}}}, nil, now)
	acme := mapping.Resource{Tenant: "acme"}
	tests := []struct {
		name  string
		e     *mapping.Engine
		g     *mapping.Grant
		res   mapping.Resource
		anyOf []string
		want  mapping.Decision
	}{
		{"a role from a rule names both", fastn, dev, acme, []string{"workflows.deploy_prod"}, mapping.Decision{Allowed: true, Permission: "workflows.deploy_prod",
			Reason: `permission "workflows.deploy_prod" granted by role "Developer" (rule #2: realm_role fastn-developer)`,
			Role:   "Developer", Rule: "rule #2: realm_role fastn-developer"}},
		{"a permission from a claim rule", fastn, dev, acme, []string{"billing.view"}, mapping.Decision{Allowed: true, Permission: "billing.view",
			Reason: `permission "billing.view" granted directly (rule #3: claim department equals "ops")`, Rule: `rule #3: claim department equals "ops"`}},
		{"any-of reports the one that passed", fastn, dev, acme, []string{"billing.manage", "workflows.read"}, mapping.Decision{Allowed: true, Permission: "workflows.read",
			Reason: `permission "workflows.read" granted by role "Developer" (rule #2: realm_role fastn-developer)`, Role: "Developer", Rule: "rule #2: realm_role fastn-developer"}},
		{"nothing grants it", fastn, dev, acme, []string{"billing.manage", "people.invite"}, mapping.Decision{
			Reason: `no role grants any of [billing.manage people.invite]`}},
		{"another tenant", fastn, dev, mapping.Resource{Tenant: "globex"}, []string{"workflows.read"}, mapping.Decision{
			Reason: `resource tenant "globex" differs from caller tenant "acme"`}},
		{"a caller in no tenant", fastn, subject(fastn, "x", "", "fastn-admin"), mapping.Resource{Tenant: "globex"}, []string{"workflows.read"}, mapping.Decision{
			Reason: `resource tenant "globex" differs from caller tenant "" (the caller is in no tenant)`}},
		{"an empty any-of is an error", fastn, dev, acme, nil, mapping.Decision{Reason: "the request names no permission: give at least one"}},
		{"a name outside the catalog", fastn, dev, acme, []string{"rockets.launch"}, mapping.Decision{Reason: `"rockets.launch" is not in the fastn catalog`}},
		{"unknown names are skipped in an any-of", fastn, dev, acme, []string{"tenant.users.view", "people.view"}, mapping.Decision{Allowed: true, Permission: "people.view",
			Reason: `permission "people.view" granted by role "Developer" (rule #2: realm_role fastn-developer)`, Role: "Developer", Rule: "rule #2: realm_role fastn-developer"}},
		{"unknown names are mentioned when nothing passes", fastn, dev, acme, []string{"tenant.users.manage", "people.manage"}, mapping.Decision{
			Reason: `no role grants any of [tenant.users.manage people.manage] ("tenant.users.manage" is not in the fastn catalog)`}},
		{"a tenant bypass", endatix, subject(endatix, "adam", "acme", "admin"), acme, []string{"forms.delete"}, mapping.Decision{Allowed: true, Permission: "forms.delete",
			Reason: `permission "forms.delete" passed by bypass role "Admin", which passes every check inside its own tenant (rule #0: realm_role admin)`,
			Role:   "Admin", Rule: "rule #0: realm_role admin"}},
		{"the platform policy", endatix, subject(endatix, "adam", "acme", "admin"), acme, []string{"platform.logs.view"}, mapping.Decision{
			Reason: `"platform.logs.view": platform.* requires role PlatformAdmin`}},
		{"a pseudo role", endatix, subject(endatix, "cora", "acme"), acme, []string{"access.authenticated"}, mapping.Decision{Allowed: true, Permission: "access.authenticated",
			Reason: `permission "access.authenticated" granted by role "Authenticated" (pseudo role of every verified subject)`, Role: "Authenticated"}},
		{"nil grant", fastn, nil, acme, []string{"workflows.read"}, mapping.Decision{Reason: "no resolved grant for the caller"}},
		{"a grant not made by Resolve", fastn, &mapping.Grant{Subject: "forged", Permissions: []string{"workflows.read"}}, acme, []string{"workflows.read"},
			mapping.Decision{Reason: "no resolved grant for the caller"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.e, tt.g, tt.res, tt.anyOf...); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestTemporaryGrantsStopAtTheInstantOfExpiry(t *testing.T) {
	e := engine(t, "fastn")
	exp := now.Add(time.Hour)
	g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}},
		[]mapping.Assignment{{Permission: "workflows.deploy_prod", Tenant: "acme", Source: "temporary", ExpiresAt: exp, Ref: "jit-42"}}, now)
	tests := []struct {
		name  string
		at    time.Time
		allow bool
		why   string
	}{
		{"just before", exp.Add(-time.Nanosecond), true, `permission "workflows.deploy_prod" granted directly (jit-42, until 2026-06-01T13:00:00Z)`},
		{"at the instant", exp, false, `"workflows.deploy_prod" was granted until 2026-06-01T13:00:00Z (jit-42), which has passed`},
		{"after", exp.Add(time.Minute), false, "which has passed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(g, mapping.Request{AnyOf: []string{"workflows.deploy_prod"}, Now: tt.at})
			if d.Allowed != tt.allow || !strings.Contains(d.Reason, tt.why) {
				t.Errorf("%+v, want allowed=%v reason containing %q", d, tt.allow, tt.why)
			}
			if tt.allow && d.Grant != "jit-42" {
				t.Errorf("Grant = %q, want the assignment's ref", d.Grant)
			}
			if g.Has("workflows.deploy_prod", tt.at) != tt.allow {
				t.Error("Has disagrees with Decide")
			}
		})
	}
	if !slices.Contains(g.Permissions, "workflows.deploy_prod") {
		t.Error("a running temporary grant is not listed")
	}
	expired := e.Resolve(mapping.Facts{Subject: "s"}, []mapping.Assignment{{Role: "Owner", ExpiresAt: now}}, now)
	if expired.HasRole("Owner") || len(expired.Permissions) != 0 {
		t.Error("an assignment expired at resolve time still counts")
	}
}

func TestTemporaryRolesExpireWithTheirBypassAndPolicy(t *testing.T) {
	e := engine(t, "endatix")
	exp := now.Add(time.Hour)
	g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}},
		[]mapping.Assignment{{Role: "PlatformAdmin", Source: "temporary", ExpiresAt: exp, Ref: "break-glass-7"}}, now)
	if g.PrimaryRole() != "PlatformAdmin" || !g.Global() {
		t.Fatalf("primary %q global %v", g.PrimaryRole(), g.Global())
	}
	globex := mapping.Resource{Tenant: "globex"}
	for _, p := range []string{"platform.tenants.manage", "forms.delete"} {
		before := e.Decide(g, mapping.Request{AnyOf: []string{p}, Resource: globex, Now: exp.Add(-time.Second)})
		if !before.Allowed || before.Grant != "break-glass-7" || before.Role != "PlatformAdmin" {
			t.Errorf("%s before expiry: %+v", p, before)
		}
		if after := e.Decide(g, mapping.Request{AnyOf: []string{p}, Resource: globex, Now: exp}); after.Allowed {
			t.Errorf("%s at expiry: still allowed: %+v", p, after)
		}
	}
	if d := e.Decide(g, mapping.Request{AnyOf: []string{"platform.tenants.manage"}, Now: exp}); d.Allowed || !strings.Contains(d.Reason, "requires role PlatformAdmin") {
		t.Errorf("platform.* after the temporary role expired: %+v", d)
	}
}

func TestALastingGrantOutranksATemporaryOneForTheSamePermission(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "v", GrantRole: "Viewer"})
	g := e.Resolve(mapping.Facts{Subject: "s", RealmRoles: []string{"v"}},
		[]mapping.Assignment{{Permission: "workflows.read", Source: "temporary", ExpiresAt: now.Add(time.Minute), Ref: "t1"}}, now)
	d := e.Decide(g, mapping.Request{AnyOf: []string{"workflows.read"}, Now: now.Add(time.Hour)})
	if !d.Allowed || d.Role != "Viewer" || d.Grant != "" {
		t.Errorf("%+v: the lasting Viewer grant should explain it", d)
	}
}

func TestStoredAssignmentsCountOnlyInTheirTenant(t *testing.T) {
	e := engine(t, "fastn")
	stored := []mapping.Assignment{
		{Role: "Developer", Tenant: "acme", Source: "local", Ref: "local assignment 1"},
		{Role: "Owner", Tenant: "globex", Source: "local", Ref: "local assignment 2"},
		{Permission: "billing.view", Source: "local", Ref: "local assignment 3"},
		{Role: "Nonexistent", Source: "local"},
		{Permission: "rockets.launch", Source: "local"},
	}
	g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}}, stored, now)
	if !slices.Equal(g.Roles, []string{"Developer"}) || !g.Has("billing.view", now) || g.Has("billing.manage", now) {
		t.Errorf("roles %v permissions %v", g.Roles, g.Permissions)
	}
	if d := decide(e, g, mapping.Resource{}, "workflows.create"); d.Grant != "local assignment 1" ||
		d.Reason != `permission "workflows.create" granted by role "Developer" (local assignment 1)` {
		t.Errorf("%+v", d)
	}
}

func TestOwnedPermissionsNeedTheCallerToOwnTheResource(t *testing.T) {
	e := engine(t, "endatix", mapping.Rule{RealmRole: "r", GrantPermissions: []string{"submissions.delete.owned"}})
	g := subject(e, "sam", "acme", "r")
	anon := e.Resolve(mapping.Facts{RealmRoles: []string{"r"}}, nil, now)
	tests := []struct {
		name  string
		g     *mapping.Grant
		owner string
		allow bool
	}{
		{"the owner", g, "sam", true},
		{"someone else", g, "cora", false},
		{"no owner given", g, "", false},
		{"a subject-less grant never owns an unowned resource", anon, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := decide(e, tt.g, mapping.Resource{Owner: tt.owner}, "submissions.delete.owned"); d.Allowed != tt.allow {
				t.Errorf("%+v, want allowed=%v", d, tt.allow)
			}
		})
	}
}

func TestGlobalBypassCrossesTenantsAndTenantBypassDoesNot(t *testing.T) {
	e := engine(t, "endatix", mapping.Rule{RealmRole: "admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "pa", GrantRole: "PlatformAdmin"})
	admin, pa := subject(e, "a", "acme", "admin"), subject(e, "p", "acme", "pa")
	for _, tt := range []struct {
		g     *mapping.Grant
		res   mapping.Resource
		allow bool
	}{
		{admin, mapping.Resource{Tenant: "acme"}, true},
		{admin, mapping.Resource{}, true},
		{admin, mapping.Resource{Tenant: "globex"}, false},
		{pa, mapping.Resource{Tenant: "globex"}, true},
	} {
		if d := decide(e, tt.g, tt.res, "forms.view"); d.Allowed != tt.allow {
			t.Errorf("%s on %q: %+v", tt.g.PrimaryRole(), tt.res.Tenant, d)
		}
	}
}

func TestGrantsAreSafeForConcurrentDecisions(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "dev", GrantRole: "Developer"})
	g := subject(e, "s", "acme", "dev")
	done := make(chan bool)
	for range 8 {
		go func() {
			ok := true
			for range 1000 {
				ok = ok && decide(e, g, mapping.Resource{Tenant: "acme"}, "workflows.read").Allowed
			}
			done <- ok
		}()
	}
	for range 8 {
		if !<-done {
			t.Error("a concurrent decision was denied")
		}
	}
}
