package mapping_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

// The tables below are the seed documents (shared/seeds 000 and 004) and
// DESIGN.md's completion of fastn's counts, written out by hand: a preset
// edit that drifts from the seed fails here.

var fastnReads = []string{"connectors.read", "connections.read", "workflows.read", "agents.read", "tools.read"}

var fastnCategories = map[string][]string{
	"connectors":  {"create", "read", "update", "delete", "deploy_test", "deploy_prod"},
	"connections": {"create", "read", "update", "delete", "execute", "share"},
	"workflows":   {"create", "read", "update", "delete", "execute", "deploy_test", "deploy_prod"},
	"agents":      {"create", "read", "update", "delete", "execute"},
	"tools":       {"create", "read", "update", "delete", "execute"},
	"settings":    {"view", "manage"},
	"billing":     {"view", "manage"},
	"people":      {"view", "manage", "invite"},
	"audit":       {"view"},
	"activity":    {"view"},
	"widget":      {"use"},
}

func catalogOf(cats map[string][]string, only ...string) []string {
	var out []string
	for c, actions := range cats {
		if len(only) > 0 && !slices.Contains(only, c) {
			continue
		}
		for _, a := range actions {
			out = append(out, c+"."+a)
		}
	}
	return sorted(out...)
}

// fastnPlatform is keybridge's own platform-level permission (tenant
// administration, issue 16), beside the seed's 39: no system role holds it.
var fastnPlatform = []string{"platform.tenants.manage"}

func TestFastnCatalogIsTheSeedsFiveCategoriesPlusTenOrganizationPermissions(t *testing.T) {
	e := engine(t, "fastn")
	got := e.Catalog()
	if want := sorted(append(catalogOf(fastnCategories), fastnPlatform...)...); !slices.Equal(got.Permissions, want) {
		t.Errorf("catalog = %v\nwant %v", got.Permissions, want)
	}
	if n := len(catalogOf(fastnCategories, "connectors", "connections", "workflows", "agents", "tools")); n != 29 {
		t.Errorf("the seed's five categories hold %d actions, want 29", n)
	}
	if len(got.Permissions) != 39+len(fastnPlatform) {
		t.Errorf("catalog has %d permissions, want the seed's 39 and %v", len(got.Permissions), fastnPlatform)
	}
	for _, c := range got.Categories {
		if c.Name == "platform" {
			continue
		}
		if !slices.Equal(c.Actions, fastnCategories[c.Name]) {
			t.Errorf("category %s actions %v, want the seed's order %v", c.Name, c.Actions, fastnCategories[c.Name])
		}
	}
}

func TestFastnSystemRolesHoldExactlyTheSeedsSets(t *testing.T) {
	all := catalogOf(fastnCategories)
	five := catalogOf(fastnCategories, "connectors", "connections", "workflows", "agents", "tools")
	tests := []struct {
		role  string
		count int
		want  []string
	}{
		{"Owner", 39, all},
		{"Admin", 39, all},
		{"Developer", 34, append(slices.Clone(five), "settings.view", "people.view", "audit.view", "activity.view", "widget.use")},
		{"Operator", 18, append(slices.Clone(fastnReads),
			"connections.execute", "workflows.execute", "agents.execute", "tools.execute",
			"connectors.deploy_test", "connectors.deploy_prod", "workflows.deploy_test", "workflows.deploy_prod",
			"activity.view", "audit.view", "people.view", "settings.view", "widget.use")},
		{"Viewer", 7, append(slices.Clone(fastnReads), "activity.view", "audit.view")},
		{"End User", 9, []string{"connections.create", "connections.read", "connections.update", "connections.delete", "connections.execute",
			"widget.use", "activity.view", "settings.view", "people.view"}},
	}
	e := engine(t, "fastn")
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			r := role(t, e, tt.role)
			if len(r.Permissions) != tt.count {
				t.Errorf("%s holds %d permissions, the seed says %d", tt.role, len(r.Permissions), tt.count)
			}
			if want := sorted(tt.want...); !slices.Equal(r.Permissions, want) {
				t.Errorf("%s = %v\nwant %v", tt.role, r.Permissions, want)
			}
			if r.Kind != mapping.KindSystem || r.Bypass != "" {
				t.Errorf("%s: kind %q bypass %q: fastn roles are plain system roles", tt.role, r.Kind, r.Bypass)
			}
		})
	}
	var names []string
	for _, r := range e.Roles() {
		names = append(names, r.Name)
		for _, p := range fastnPlatform {
			if slices.Contains(r.Permissions, p) {
				t.Errorf("%s holds %s: no fastn role may, a rule grants it to platform operators", r.Name, p)
			}
		}
	}
	if want := []string{"Owner", "Admin", "Developer", "Operator", "Viewer", "End User"}; !slices.Equal(names, want) {
		t.Errorf("fastn roles %v, want the seed's six in rank order %v", names, want)
	}
}

func TestFastnMatrixIsTheSeedsMatrix(t *testing.T) {
	m := mapping.Matrix(engine(t, "fastn"))
	// Rows and columns as the seed prints them; "" is an empty cell.
	want := []struct {
		category string
		cells    []string // Owner, Admin, Developer, Operator, Viewer, End User
	}{
		{"connectors", []string{"6/6", "6/6", "6/6", "varies", "read only", ""}},
		{"connections", []string{"6/6", "6/6", "6/6", "varies", "read only", "varies"}},
		{"workflows", []string{"7/7", "7/7", "7/7", "varies", "read only", ""}},
		{"agents", []string{"5/5", "5/5", "5/5", "varies", "read only", ""}},
		{"tools", []string{"5/5", "5/5", "5/5", "varies", "read only", ""}},
	}
	if !slices.Equal(m.Roles, []string{"Owner", "Admin", "Developer", "Operator", "Viewer", "End User"}) {
		t.Fatalf("matrix columns %v", m.Roles)
	}
	if len(m.Rows) != len(want) {
		t.Fatalf("matrix has %d rows, want %d", len(m.Rows), len(want))
	}
	for i, w := range want {
		row := m.Rows[i]
		if row.Category != w.category {
			t.Errorf("row %d is %s, want %s", i, row.Category, w.category)
			continue
		}
		for j, r := range m.Roles {
			if row.Cells[r] != w.cells[j] {
				t.Errorf("%s x %s = %q, want %q", w.category, r, row.Cells[r], w.cells[j])
			}
		}
	}
}

func TestFastnDecisionsFollowTheMatrix(t *testing.T) {
	e := engine(t, "fastn",
		mapping.Rule{RealmRole: "owner", GrantRole: "Owner"}, mapping.Rule{RealmRole: "admin", GrantRole: "Admin"},
		mapping.Rule{RealmRole: "dev", GrantRole: "Developer"}, mapping.Rule{RealmRole: "ops", GrantRole: "Operator"},
		mapping.Rule{RealmRole: "viewer", GrantRole: "Viewer"}, mapping.Rule{RealmRole: "enduser", GrantRole: "End User"})
	acme, globex := mapping.Resource{Tenant: "acme"}, mapping.Resource{Tenant: "globex"}
	tests := []struct {
		name  string
		role  string
		res   mapping.Resource
		perm  string
		allow bool
	}{
		{"owner manages billing", "owner", acme, "billing.manage", true},
		{"owner invites people", "owner", acme, "people.invite", true},
		{"owner stays inside its tenant", "owner", globex, "workflows.read", false},
		{"admin manages org settings", "admin", acme, "settings.manage", true},
		{"admin stays inside its tenant", "admin", globex, "settings.view", false},
		{"developer deploys to prod", "dev", acme, "workflows.deploy_prod", true},
		{"developer shares connections", "dev", acme, "connections.share", true},
		{"developer has no billing view", "dev", acme, "billing.view", false},
		{"developer has no billing management", "dev", acme, "billing.manage", false},
		{"developer has no org settings", "dev", acme, "settings.manage", false},
		{"developer does not manage people", "dev", acme, "people.manage", false},
		{"developer does not invite", "dev", acme, "people.invite", false},
		{"developer views settings", "dev", acme, "settings.view", true},
		{"operator runs workflows", "ops", acme, "workflows.execute", true},
		{"operator deploys connectors", "ops", acme, "connectors.deploy_prod", true},
		{"operator does not edit workflows", "ops", acme, "workflows.update", false},
		{"operator does not create agents", "ops", acme, "agents.create", false},
		{"viewer reads workflows", "viewer", acme, "workflows.read", true},
		{"viewer sees the audit log", "viewer", acme, "audit.view", true},
		{"viewer does not execute", "viewer", acme, "tools.execute", false},
		{"viewer has no widget", "viewer", acme, "widget.use", false},
		{"end user creates connections in its customer", "enduser", acme, "connections.create", true},
		{"end user uses the widget in its customer", "enduser", acme, "widget.use", true},
		{"end user cannot reach another customer", "enduser", globex, "connections.read", false},
		{"end user cannot share connections", "enduser", acme, "connections.share", false},
		{"end user cannot read workflows", "enduser", acme, "workflows.read", false},
		{"an unknown permission is denied even to owners", "owner", acme, "rockets.launch", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := subject(e, "u-"+tt.role, "acme", tt.role)
			d := decide(e, g, tt.res, tt.perm)
			if d.Allowed != tt.allow || d.Reason == "" {
				t.Errorf("allowed=%v reason=%q, want allowed=%v", d.Allowed, d.Reason, tt.allow)
			}
		})
	}
}

func TestFastnViewerIsReadOnlyOverEveryCategoryPermission(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "viewer", GrantRole: "Viewer"})
	g := subject(e, "v", "acme", "viewer")
	for _, p := range catalogOf(fastnCategories, "connectors", "connections", "workflows", "agents", "tools") {
		want := strings.HasSuffix(p, ".read")
		if d := decide(e, g, mapping.Resource{}, p); d.Allowed != want {
			t.Errorf("viewer %s: allowed=%v, want %v (%s)", p, d.Allowed, want, d.Reason)
		}
	}
}

var endatixCatalog = map[string][]string{
	"access":      {"authenticated", "apps.hub"},
	"platform":    {"tenants.manage", "settings.manage", "integrations.manage", "users.impersonate", "metrics.view", "logs.view", "usage.view"},
	"tenant":      {"users.invite", "users.view", "users.manage", "roles.view", "roles.manage", "settings.view", "settings.manage", "usage.view"},
	"forms":       {"view", "create", "edit", "delete"},
	"templates":   {"view", "create", "edit", "delete"},
	"themes":      {"view", "create", "edit", "delete"},
	"submissions": {"view", "create", "edit", "delete", "export", "delete.owned"},
	"questions":   {"view", "create", "edit", "delete"},
}

func TestEndatixCatalogHoldsEveryPermissionOfTheSeed(t *testing.T) {
	got := engine(t, "endatix").Catalog().Permissions
	if want := catalogOf(endatixCatalog); !slices.Equal(got, want) {
		t.Errorf("catalog = %v\nwant %v", got, want)
	}
}

func TestEndatixRolesHoldTheSeedsSets(t *testing.T) {
	all := catalogOf(endatixCatalog)
	var nonPlatform []string
	for _, p := range all {
		if !strings.HasPrefix(p, "platform.") {
			nonPlatform = append(nonPlatform, p)
		}
	}
	tests := []struct {
		role, kind, bypass string
		want               []string
	}{
		{"PlatformAdmin", mapping.KindSystem, mapping.BypassGlobal, all},
		{"Admin", mapping.KindSystem, mapping.BypassTenant, nonPlatform},
		{"Creator", mapping.KindSystem, "", append(catalogOf(endatixCatalog, "forms", "templates", "themes", "questions"), "access.apps.hub")},
		{"Authenticated", mapping.KindPseudo, "", []string{"access.authenticated"}},
		{"Public", mapping.KindPseudo, "", []string{}},
	}
	e := engine(t, "endatix")
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			r := role(t, e, tt.role)
			if want := sorted(tt.want...); !slices.Equal(r.Permissions, want) {
				t.Errorf("%s = %v\nwant %v", tt.role, r.Permissions, want)
			}
			if r.Kind != tt.kind || r.Bypass != tt.bypass {
				t.Errorf("%s: kind %q bypass %q, want %q %q", tt.role, r.Kind, r.Bypass, tt.kind, tt.bypass)
			}
		})
	}
}

func TestEndatixRolesBehaveAsTheSeedSays(t *testing.T) {
	e := engine(t, "endatix",
		mapping.Rule{RealmRole: "admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "platform", GrantRole: "PlatformAdmin"},
		mapping.Rule{RealmRole: "creator", GrantRole: "Creator"},
		mapping.Rule{RealmRole: "own-deleter", GrantPermissions: []string{"submissions.delete.owned"}})
	admin := subject(e, "adam", "acme", "admin")
	platform := subject(e, "pat", "", "platform")
	creator := subject(e, "cora", "acme", "creator")
	ownCreator := subject(e, "sam", "acme", "creator", "own-deleter")
	authn := subject(e, "nobody", "acme")
	public := e.Anonymous()
	for _, p := range catalogOf(endatixCatalog) {
		platformPerm := strings.HasPrefix(p, "platform.")
		tests := []struct {
			who   string
			g     *mapping.Grant
			res   mapping.Resource
			allow bool
		}{
			{"Admin passes every tenant-level permission in its tenant, never platform.*", admin, mapping.Resource{Tenant: "acme", Owner: "someone"}, !platformPerm},
			{"Admin passes nothing in another tenant", admin, mapping.Resource{Tenant: "globex"}, false},
			{"PlatformAdmin passes everything", platform, mapping.Resource{Owner: "someone"}, true},
			{"PlatformAdmin passes everything in any tenant", platform, mapping.Resource{Tenant: "globex", Owner: "someone"}, true},
			{"Authenticated holds access.authenticated only", authn, mapping.Resource{}, p == "access.authenticated"},
			{"Public holds nothing", public, mapping.Resource{}, false},
			{"Creator holds forms, templates, themes, questions and the hub",
				creator, mapping.Resource{}, slices.Contains(role(t, e, "Creator").Permissions, p) || p == "access.authenticated"},
		}
		for _, tt := range tests {
			if d := decide(e, tt.g, tt.res, p); d.Allowed != tt.allow || d.Reason == "" {
				t.Errorf("%s: %s allowed=%v (%s), want %v", tt.who, p, d.Allowed, d.Reason, tt.allow)
			}
		}
	}

	// The seed's any-of example: DELETE submissions/{id} needs
	// submissions.delete or submissions.delete.owned.
	anyOf := []string{"submissions.delete", "submissions.delete.owned"}
	own := mapping.Resource{Tenant: "acme", Owner: "sam"}
	others := mapping.Resource{Tenant: "acme", Owner: "cora"}
	tests := []struct {
		name  string
		g     *mapping.Grant
		res   mapping.Resource
		allow bool
		why   string
	}{
		{"creator with delete.owned deletes its own submission", ownCreator, own, true, `permission "submissions.delete.owned" granted directly (rule #3: realm_role own-deleter)`},
		{"creator with delete.owned cannot delete another's", ownCreator, others, false, `"submissions.delete.owned" requires the caller to own the resource (owner "cora", caller "sam")`},
		{"creator with delete.owned cannot delete an unowned submission", ownCreator, mapping.Resource{Tenant: "acme"}, false, "the request names no owner"},
		{"plain creator cannot delete its own", subject(e, "sam", "acme", "creator"), own, false, "no role grants any of [submissions.delete submissions.delete.owned]"},
		{"admin deletes anyone's", admin, others, true, `permission "submissions.delete" passed by bypass role "Admin"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(e, tt.g, tt.res, anyOf...)
			if d.Allowed != tt.allow || !strings.Contains(d.Reason, tt.why) {
				t.Errorf("allowed=%v reason=%q, want allowed=%v reason containing %q", d.Allowed, d.Reason, tt.allow, tt.why)
			}
		})
	}

	if d := decide(e, admin, mapping.Resource{}, "platform.tenants.manage"); !strings.Contains(d.Reason, "platform.* requires role PlatformAdmin") {
		t.Errorf("admin on platform.*: reason %q does not name the policy", d.Reason)
	}
	if !slices.Equal(authn.Roles, []string{"Authenticated"}) || !slices.Equal(authn.Permissions, []string{"access.authenticated"}) {
		t.Errorf("a verified subject without roles: roles %v permissions %v", authn.Roles, authn.Permissions)
	}
	if !slices.Equal(public.Roles, []string{"Public"}) || len(public.Permissions) != 0 {
		t.Errorf("anonymous: roles %v permissions %v", public.Roles, public.Permissions)
	}
	if platform.PrimaryRole() != "PlatformAdmin" || !platform.Global() || admin.Global() {
		t.Errorf("primary %q global %v, admin global %v", platform.PrimaryRole(), platform.Global(), admin.Global())
	}
}

func TestFastnHasNoPseudoRoles(t *testing.T) {
	e := engine(t, "fastn")
	g := subject(e, "s", "acme")
	if len(g.Roles) != 0 || len(g.Permissions) != 0 || g.PrimaryRole() != "" {
		t.Errorf("a fastn subject without rules matched holds %v %v", g.Roles, g.Permissions)
	}
	if a := e.Anonymous(); len(a.Roles) != 0 {
		t.Errorf("fastn anonymous roles %v", a.Roles)
	}
}
