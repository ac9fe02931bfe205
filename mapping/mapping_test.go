package mapping_test

import (
	"errors"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/mapping"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func engine(t testing.TB, preset string, rules ...mapping.Rule) *mapping.Engine {
	t.Helper()
	e, err := mapping.New(mapping.Config{Preset: preset, Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func role(t *testing.T, e *mapping.Engine, name string) mapping.Role {
	t.Helper()
	r, ok := e.Role(name, "")
	if !ok {
		t.Fatalf("no role %s", name)
	}
	return r
}

func set(ps ...string) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[p] = true
	}
	return m
}

func TestFastnRolesHaveTheSeedsCounts(t *testing.T) {
	e := engine(t, "fastn")
	want := map[string]int{"Owner": 39, "Admin": 39, "Developer": 34, "Operator": 18, "Viewer": 7, "End User": 9}
	for name, n := range want {
		if got := len(role(t, e, name).Permissions); got != n {
			t.Errorf("%s has %d permissions, want %d", name, got, n)
		}
	}
	if got := len(e.Catalog().Permissions); got != 39 {
		t.Errorf("catalog has %d permissions, want 39", got)
	}
}

func TestFastnRolesExactSets(t *testing.T) {
	e := engine(t, "fastn")
	reads := []string{"connectors.read", "connections.read", "workflows.read", "agents.read", "tools.read"}
	tests := []struct {
		role string
		want []string
	}{
		{"Viewer", append(slices.Clone(reads), "activity.view", "audit.view")},
		{"End User", []string{"connections.create", "connections.read", "connections.update", "connections.delete", "connections.execute",
			"widget.use", "activity.view", "settings.view", "people.view"}},
		{"Operator", append(slices.Clone(reads), "connections.execute", "workflows.execute", "agents.execute", "tools.execute",
			"connectors.deploy_test", "connectors.deploy_prod", "workflows.deploy_test", "workflows.deploy_prod",
			"activity.view", "audit.view", "people.view", "settings.view", "widget.use")},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			got := role(t, e, tt.role).Permissions
			w := slices.Clone(tt.want)
			sort.Strings(w)
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s = %v\nwant %v", tt.role, got, w)
			}
		})
	}
	dev := set(role(t, e, "Developer").Permissions...)
	for _, p := range []string{"billing.view", "billing.manage", "settings.manage", "people.manage", "people.invite"} {
		if dev[p] {
			t.Errorf("Developer has %s: no billing or org settings", p)
		}
	}
	for _, c := range []string{"connectors", "connections", "workflows", "agents", "tools"} {
		for _, p := range e.Catalog().Permissions {
			if strings.HasPrefix(p, c+".") && !dev[p] {
				t.Errorf("Developer lacks %s", p)
			}
		}
	}
}

func TestMatrixMatchesTheSeed(t *testing.T) {
	m := mapping.Matrix(engine(t, "fastn"))
	want := map[string]map[string]string{
		"connectors":  {"Owner": "6/6", "Admin": "6/6", "Developer": "6/6", "Operator": "varies", "Viewer": "read only", "End User": ""},
		"connections": {"Owner": "6/6", "Admin": "6/6", "Developer": "6/6", "Operator": "varies", "Viewer": "read only", "End User": "varies"},
		"workflows":   {"Owner": "7/7", "Admin": "7/7", "Developer": "7/7", "Operator": "varies", "Viewer": "read only", "End User": ""},
		"agents":      {"Owner": "5/5", "Admin": "5/5", "Developer": "5/5", "Operator": "varies", "Viewer": "read only", "End User": ""},
		"tools":       {"Owner": "5/5", "Admin": "5/5", "Developer": "5/5", "Operator": "varies", "Viewer": "read only", "End User": ""},
	}
	if len(m.Rows) != 5 {
		t.Fatalf("matrix has %d rows", len(m.Rows))
	}
	for _, row := range m.Rows {
		if !reflect.DeepEqual(row.Cells, want[row.Category]) {
			t.Errorf("%s: %v\nwant %v", row.Category, row.Cells, want[row.Category])
		}
	}
}

func grantFor(e *mapping.Engine, sub, tenant string, realmRoles ...string) *mapping.Grant {
	return e.Resolve(mapping.Facts{Subject: sub, RealmRoles: realmRoles, Groups: []string{"/customers/" + tenant}}, nil, now)
}

func decide(e *mapping.Engine, g *mapping.Grant, res mapping.Resource, anyOf ...string) mapping.Decision {
	return e.Decide(g, mapping.Request{AnyOf: anyOf, Resource: res, Now: now})
}

func TestFastnDecisions(t *testing.T) {
	e := engine(t, "fastn",
		mapping.Rule{RealmRole: "dev", GrantRole: "Developer"}, mapping.Rule{RealmRole: "viewer", GrantRole: "Viewer"},
		mapping.Rule{RealmRole: "enduser", GrantRole: "End User"}, mapping.Rule{RealmRole: "owner", GrantRole: "Owner"})
	dev := grantFor(e, "dana", "acme", "dev")
	viewer := grantFor(e, "victor", "acme", "viewer")
	eu := grantFor(e, "erin", "acme", "enduser")
	owner := grantFor(e, "alice", "acme", "owner")
	acme, globex := mapping.Resource{Tenant: "acme"}, mapping.Resource{Tenant: "globex"}
	tests := []struct {
		name  string
		g     *mapping.Grant
		res   mapping.Resource
		perm  string
		allow bool
	}{
		{"developer deploys to prod", dev, acme, "workflows.deploy_prod", true},
		{"developer has no billing", dev, acme, "billing.manage", false},
		{"developer has no org settings", dev, acme, "settings.manage", false},
		{"viewer reads", viewer, acme, "workflows.read", true},
		{"viewer is read-only", viewer, acme, "workflows.update", false},
		{"end user manages connections in its customer", eu, acme, "connections.create", true},
		{"end user cannot reach another customer", eu, globex, "connections.read", false},
		{"end user cannot share connections", eu, acme, "connections.share", false},
		{"owner is bounded by its tenant too", owner, globex, "workflows.read", false},
		{"owner manages billing", owner, acme, "billing.manage", true},
		{"unknown permission is denied", owner, acme, "rockets.launch", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(e, tt.g, tt.res, tt.perm)
			if d.Allowed != tt.allow || d.Reason == "" {
				t.Errorf("allowed=%v reason=%q, want allowed=%v", d.Allowed, d.Reason, tt.allow)
			}
		})
	}
	d := decide(e, dev, acme, "workflows.deploy_prod")
	if d.Role != "Developer" || !strings.Contains(d.Rule, "rule #0: realm_role dev") || !strings.Contains(d.Reason, `role "Developer"`) {
		t.Errorf("explanation = %+v", d)
	}
	if d := decide(e, eu, globex, "connections.read"); !strings.Contains(d.Reason, `"globex" differs from caller tenant "acme"`) {
		t.Errorf("cross-tenant reason = %q", d.Reason)
	}
}

func TestEndatixDecisions(t *testing.T) {
	e := engine(t, "endatix",
		mapping.Rule{RealmRole: "admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "platform", GrantRole: "PlatformAdmin"},
		mapping.Rule{RealmRole: "creator", GrantRole: "Creator"},
		mapping.Rule{RealmRole: "submitter", GrantPermissions: []string{"submissions.delete.owned", "submissions.view"}})
	admin := grantFor(e, "adam", "acme", "admin")
	platform := grantFor(e, "pat", "", "platform")
	creator := grantFor(e, "cora", "acme", "creator")
	authn := grantFor(e, "nobody", "acme")
	sub := grantFor(e, "sam", "acme", "submitter")
	public := e.Anonymous()
	acme, globex := mapping.Resource{Tenant: "acme"}, mapping.Resource{Tenant: "globex"}
	own := mapping.Resource{Tenant: "acme", Owner: "sam"}
	other := mapping.Resource{Tenant: "acme", Owner: "someone"}
	tests := []struct {
		name  string
		g     *mapping.Grant
		res   mapping.Resource
		anyOf []string
		allow bool
	}{
		{"admin passes any tenant permission", admin, acme, []string{"tenant.users.manage"}, true},
		{"admin passes forms", admin, acme, []string{"forms.delete"}, true},
		{"admin passes another's owned submission", admin, other, []string{"submissions.delete.owned"}, true},
		{"admin does not reach platform", admin, acme, []string{"platform.tenants.manage"}, false},
		{"admin stays in its tenant", admin, globex, []string{"forms.view"}, false},
		{"platform admin passes platform", platform, mapping.Resource{}, []string{"platform.tenants.manage"}, true},
		{"platform admin passes everywhere", platform, globex, []string{"forms.delete"}, true},
		{"creator creates forms", creator, acme, []string{"forms.create"}, true},
		{"creator has hub access", creator, acme, []string{"access.apps.hub"}, true},
		{"creator cannot delete submissions", creator, acme, []string{"submissions.delete"}, false},
		{"authenticated has access.authenticated", authn, acme, []string{"access.authenticated"}, true},
		{"authenticated has nothing else", authn, acme, []string{"forms.view"}, false},
		{"public has nothing", public, mapping.Resource{}, []string{"access.authenticated"}, false},
		{"owned passes for the owner", sub, own, []string{"submissions.delete.owned"}, true},
		{"owned fails for others", sub, other, []string{"submissions.delete.owned"}, false},
		{"owned fails without an owner", sub, acme, []string{"submissions.delete.owned"}, false},
		{"seed any-of: own submission", sub, own, []string{"submissions.delete", "submissions.delete.owned"}, true},
		{"seed any-of: another's submission", sub, other, []string{"submissions.delete", "submissions.delete.owned"}, false},
		{"seed any-of: admin deletes any", admin, other, []string{"submissions.delete", "submissions.delete.owned"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(e, tt.g, tt.res, tt.anyOf...)
			if d.Allowed != tt.allow || d.Reason == "" {
				t.Errorf("allowed=%v reason=%q, want %v", d.Allowed, d.Reason, tt.allow)
			}
		})
	}
	if d := decide(e, admin, acme, "platform.tenants.manage"); !strings.Contains(d.Reason, "requires role PlatformAdmin") {
		t.Errorf("policy reason = %q", d.Reason)
	}
	if d := decide(e, sub, other, "submissions.delete.owned"); !strings.Contains(d.Reason, "own the resource") {
		t.Errorf("owned reason = %q", d.Reason)
	}
	if !slices.Equal(authn.Permissions, []string{"access.authenticated"}) || len(public.Permissions) != 0 {
		t.Errorf("pseudo roles: authenticated %v public %v", authn.Permissions, public.Permissions)
	}
	hub := func(name string) bool { return slices.Contains(role(t, e, name).Permissions, "access.apps.hub") }
	if !hub("Admin") || !hub("PlatformAdmin") || !hub("Creator") {
		t.Error("access.apps.hub must belong to Admin, PlatformAdmin and Creator")
	}
}

func TestTemporaryGrantsStopAtTheInstantOfExpiry(t *testing.T) {
	e := engine(t, "fastn")
	exp := now.Add(time.Hour)
	g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}},
		[]mapping.Assignment{{Permission: "workflows.deploy_prod", Tenant: "acme", Source: "local", ExpiresAt: exp, Ref: "jit-42"}}, now)
	req := mapping.Request{AnyOf: []string{"workflows.deploy_prod"}}
	req.Now = exp.Add(-time.Nanosecond)
	if d := e.Decide(g, req); !d.Allowed || d.Grant != "jit-42" {
		t.Errorf("before expiry: %+v", d)
	}
	req.Now = exp
	if d := e.Decide(g, req); d.Allowed || !strings.Contains(d.Reason, "has passed") {
		t.Errorf("at expiry: %+v", d)
	}
	expired := e.Resolve(mapping.Facts{Subject: "s"}, []mapping.Assignment{{Role: "Owner", ExpiresAt: now}}, now)
	if slices.Contains(expired.Roles, "Owner") {
		t.Error("an assignment expired at resolve time still counts")
	}
}

func TestCustomRoles(t *testing.T) {
	e := engine(t, "fastn")
	dup, err := mapping.DuplicateRole(e, "Developer", "Developer Lite", "acme")
	if err != nil || dup.BasedOn != "Developer" || len(dup.Permissions) != 34 {
		t.Fatalf("duplicate: %+v %v", dup, err)
	}
	if _, err := mapping.NewCustomRole(e, "Owner", "acme", []string{"workflows.read"}); !errors.Is(err, mapping.ErrImmutable) {
		t.Errorf("custom role named like a system role: %v", err)
	}
	if _, err := mapping.NewCustomRole(e, "Rocketeer", "acme", []string{"rockets.launch"}); !errors.Is(err, mapping.ErrUnknownPermission) {
		t.Errorf("custom role with a foreign permission: %v", err)
	}
	if err := mapping.ValidateRoleEdit(e, role(t, e, "Viewer")); !errors.Is(err, mapping.ErrImmutable) {
		t.Errorf("system role edit: %v", err)
	}
	lite, _ := mapping.NewCustomRole(e, "Lite", "acme", []string{"workflows.read"})
	e2, err := e.WithCustomRoles([]mapping.Role{lite})
	if err != nil {
		t.Fatal(err)
	}
	g := e2.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/acme"}}, []mapping.Assignment{{Role: "Lite", Tenant: "acme", Source: "local"}}, now)
	if !g.Has("workflows.read", now) || g.Has("workflows.update", now) {
		t.Errorf("custom role grant: %v", g.Permissions)
	}
	other := e2.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/customers/globex"}}, []mapping.Assignment{{Role: "Lite", Tenant: "globex", Source: "local"}}, now)
	if other.Has("workflows.read", now) {
		t.Error("acme's custom role works in globex")
	}
	if err := mapping.CheckLastOwner(e, 1, true); !errors.Is(err, mapping.ErrLastOwner) {
		t.Errorf("last owner: %v", err)
	}
	if err := mapping.CheckLastOwner(e, 2, true); err != nil {
		t.Errorf("two owners: %v", err)
	}
}

func TestInvalidRulesNameTheRuleAndKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown role", "rules: [{realm_role: x, grant_role: Develper}]", `mapping.rules[0].grant_role: unknown role "Develper"`},
		{"unknown permission", "rules: [{realm_role: x, grant_role: Viewer}, {group: /a, grant_permissions: [rockets.launch]}]", `mapping.rules[1].grant_permissions[0]: unknown permission "rockets.launch"`},
		{"bad glob", "rules: [{group: 'eng/**', grant_role: Viewer}]", `mapping.rules[0].group: "eng/**" must start with /`},
		{"partial glob segment", "rules: [{group: '/eng*', grant_role: Viewer}]", `mapping.rules[0].group: "/eng*": * and ** must be whole segments`},
		{"bad regex", "rules: [{claim: dept, regex: '(', grant_role: Viewer}]", `mapping.rules[0].regex: "(" does not compile`},
		{"no matcher", "rules: [{grant_role: Viewer}]", `mapping.rules[0]: no matcher`},
		{"two matchers", "rules: [{realm_role: a, group: /b, grant_role: Viewer}]", `mapping.rules[0]: more than one matcher`},
		{"no grant", "rules: [{realm_role: a}]", `mapping.rules[0]: grants nothing`},
		{"bad client role", "rules: [{client_role: portal, grant_role: Viewer}]", `mapping.rules[0].client_role: "portal" is not client:role`},
		{"unknown preset", "preset: acme", `mapping.preset: unknown preset "acme"`},
		{"two tenant sources", "tenant: {organization: true, claim: t}", `mapping.tenant: set only one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c mapping.Config
			if err := yaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
				t.Fatal(err)
			}
			errs := c.Validate()
			joined := errors.Join(errs...)
			if joined == nil || !strings.Contains(joined.Error(), tt.want) {
				t.Errorf("got %v\nwant it to contain %q", joined, tt.want)
			}
		})
	}
}

func TestRuleMatchers(t *testing.T) {
	eq := "ops"
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Claim: "tenant_id"}, Rules: []mapping.Rule{
		{ClientRole: "portal:dev", GrantRole: "Developer"},
		{Group: "/engineering/**", GrantRole: "Viewer"},
		{Claim: "department", Equals: &eq, GrantRole: "Operator"},
		{Claim: "org.level", In: []string{"gold", "platinum"}, GrantPermissions: []string{"billing.view"}},
		{Claim: "email", Regex: `@acme\.test$`, GrantPermissions: []string{"widget.use"}},
		{Organization: "acme", GrantPermissions: []string{"activity.view"}},
		{RealmRole: "x", GrantRole: "Admin", Tenant: "globex"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"sub": "u1", "preferred_username": "u", "email": "u@acme.test", "tenant_id": "acme",
		"resource_access": map[string]any{"portal": map[string]any{"roles": []any{"dev"}}},
		"realm_access":    map[string]any{"roles": []any{"x"}},
		"groups":          []any{"/engineering/backend/api"}, "department": "ops",
		"org": map[string]any{"level": "gold"}, "organization": []any{"acme"},
	}
	g := e.Resolve(mapping.FactsFromClaims(claims, mapping.ClaimPaths{}), nil, now)
	for _, p := range []string{"workflows.deploy_prod", "connectors.read", "workflows.execute", "billing.view", "widget.use", "activity.view"} {
		if !g.Has(p, now) {
			t.Errorf("missing %s (roles %v)", p, g.Roles)
		}
	}
	if g.Tenant != "acme" || slices.Contains(g.Roles, "Admin") {
		t.Errorf("tenant %q roles %v: a rule pinned to globex must not apply in acme", g.Tenant, g.Roles)
	}
	if g.PrimaryRole() != "Developer" {
		t.Errorf("primary role %q", g.PrimaryRole())
	}
}

// randomFacts builds facts as sync would read them from Keycloak.
func randomFacts(r *rand.Rand) mapping.Facts {
	pick := func(pool []string) []string {
		var out []string
		for _, p := range pool {
			if r.Intn(3) == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	f := mapping.Facts{Subject: "u" + string(rune('a'+r.Intn(26))), Username: "user",
		RealmRoles:    pick([]string{"fastn-owner", "fastn-developer", "fastn-viewer", "other"}),
		ClientRoles:   pick([]string{"portal:dev", "portal:operator", "crm:x"}),
		Groups:        pick([]string{"/customers/acme", "/customers/globex/ops", "/engineering/backend", "/x"}),
		Organizations: pick([]string{"acme", "globex"}),
		Attributes:    map[string][]string{},
	}
	if r.Intn(2) == 0 {
		f.Attributes["department"] = []string{[]string{"ops", "eng"}[r.Intn(2)]}
	}
	return f
}

// claimsOf renders facts as Keycloak puts them in an access token.
func claimsOf(f mapping.Facts) map[string]any {
	list := func(s []string) []any {
		out := make([]any, len(s))
		for i, v := range s {
			out[i] = v
		}
		return out
	}
	ra := map[string]any{}
	for _, cr := range f.ClientRoles {
		c, role, _ := strings.Cut(cr, ":")
		m, _ := ra[c].(map[string]any)
		if m == nil {
			m = map[string]any{"roles": []any{}}
			ra[c] = m
		}
		m["roles"] = append(m["roles"].([]any), role)
	}
	c := map[string]any{"sub": f.Subject, "preferred_username": f.Username, "realm_access": map[string]any{"roles": list(f.RealmRoles)},
		"resource_access": ra, "groups": list(f.Groups), "organization": list(f.Organizations)}
	for k, v := range f.Attributes {
		c[k] = v[0]
	}
	return c
}

func TestSyncAndRequestResolutionAgree(t *testing.T) {
	eq := "ops"
	rules := []mapping.Rule{
		{RealmRole: "fastn-owner", GrantRole: "Owner"}, {RealmRole: "fastn-developer", GrantRole: "Developer"},
		{ClientRole: "portal:operator", GrantRole: "Operator"}, {Group: "/engineering/**", GrantRole: "Viewer"},
		{Claim: "department", Equals: &eq, GrantPermissions: []string{"billing.view"}},
		{Organization: "globex", GrantRole: "End User"},
	}
	for _, ts := range []mapping.TenantSource{{GroupPrefix: "/customers"}, {Organization: true}, {Claim: "department"}} {
		e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: ts, Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewSource(7))
		for i := 0; i < 2000; i++ {
			f := randomFacts(r)
			a := e.Resolve(f, nil, now)
			b := e.Resolve(mapping.FactsFromClaims(claimsOf(f), mapping.ClaimPaths{}), nil, now)
			if a.Tenant != b.Tenant || !slices.Equal(a.Roles, b.Roles) || !slices.Equal(a.Permissions, b.Permissions) || !slices.Equal(a.Teams, b.Teams) {
				t.Fatalf("tenant source %+v, facts %+v:\nsync    %v %v %v\nrequest %v %v %v", ts, f, a.Tenant, a.Roles, a.Permissions, b.Tenant, b.Roles, b.Permissions)
			}
		}
	}
}
