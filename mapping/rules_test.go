package mapping_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/mapping"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func parseConfig(t *testing.T, src string) mapping.Config {
	t.Helper()
	var c mapping.Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return c
}

func TestInvalidConfigErrorsNameTheRuleIndexAndKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown role", "rules: [{realm_role: x, grant_role: Develper}]",
			`mapping.rules[0].grant_role: unknown role "Develper" (known: Owner, Admin, Developer, Operator, Viewer, End User)`},
		{"unknown role in grant_roles", "rules: [{realm_role: x, grant_roles: [Viewer, Boss]}]", `mapping.rules[0].grant_roles[1]: unknown role "Boss"`},
		{"pseudo role is not grantable", "preset: endatix\nrules: [{realm_role: x, grant_role: Public}]", `mapping.rules[0].grant_role: unknown role "Public"`},
		{"unknown permission", "rules: [{realm_role: x, grant_role: Viewer}, {group: /a, grant_permissions: [workflows.read, rockets.launch]}]",
			`mapping.rules[1].grant_permissions[1]: unknown permission "rockets.launch"`},
		{"permission of the other preset", "preset: endatix\nrules: [{realm_role: x, grant_permissions: [workflows.read]}]",
			`mapping.rules[0].grant_permissions[0]: unknown permission "workflows.read"`},
		{"glob without a leading slash", "rules: [{group: 'eng/**', grant_role: Viewer}]", `mapping.rules[0].group: "eng/**" must start with /`},
		{"glob with a partial segment", "rules: [{group: '/eng*', grant_role: Viewer}]", `mapping.rules[0].group: "/eng*": * and ** must be whole segments`},
		{"glob with a character class", "rules: [{group: '/a/[bc]', grant_role: Viewer}]", `mapping.rules[0].group: "/a/[bc]": * and ** must be whole segments`},
		{"glob with an empty segment", "rules: [{group: '/a//b', grant_role: Viewer}]", `mapping.rules[0].group: "/a//b" has an empty segment`},
		{"bad regex", "rules: [{claim: dept, regex: '(', grant_role: Viewer}]", `mapping.rules[0].regex: "(" does not compile`},
		{"no matcher", "rules: [{grant_role: Viewer}]", `mapping.rules[0]: no matcher`},
		{"two matchers", "rules: [{realm_role: a, group: /b, grant_role: Viewer}]", `mapping.rules[0]: more than one matcher (realm_role, group)`},
		{"no grant", "rules: [{realm_role: a}]", `mapping.rules[0]: grants nothing`},
		{"no grant with an empty list", "rules: [{realm_role: a, grant_permissions: []}]", `mapping.rules[0]: grants nothing`},
		{"client role without a client", "rules: [{client_role: portal, grant_role: Viewer}]", `mapping.rules[0].client_role: "portal" is not client:role`},
		{"condition without a claim", "rules: [{realm_role: a, equals: x, grant_role: Viewer}]", `mapping.rules[0]: equals, in and regex compare a claim`},
		{"two conditions", "rules: [{claim: a, equals: x, in: [y], grant_role: Viewer}]", `mapping.rules[0]: use only one of equals, in, regex`},
		{"claim path with an empty segment", "rules: [{claim: a..b, grant_role: Viewer}]", `mapping.rules[0].claim: "a..b" has an empty segment`},
		{"tenant claim path with an empty segment", "tenant: {claim: 'org.'}", `mapping.tenant.claim: "org." has an empty segment`},
		{"claims path with an empty segment", "claims: {groups: '.groups'}", `mapping.claims.groups: ".groups" has an empty segment`},
		{"unknown preset", "preset: acme", `mapping.preset: unknown preset "acme": use one of endatix, fastn`},
		{"two tenant sources", "tenant: {organization: true, claim: t}", `mapping.tenant: set only one`},
		{"group prefix not a path", "tenant: {group_prefix: customers}", `mapping.tenant.group_prefix: "customers" must be a group path`},
		{"badly named extra permission", "permissions: [Reports.View]", `mapping.permissions[0]: "Reports.View": use lower-case`},
		{"extra permission without an action", "permissions: [reports]", `mapping.permissions[0]: "reports" is not {category}.{action}[.{scope}]`},
		{"index counts every rule, valid ones too", "rules: [{realm_role: a, grant_role: Viewer}, {realm_role: b, grant_role: Viewer}, {realm_role: c, grant_role: Nope}]",
			`mapping.rules[2].grant_role: unknown role "Nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseConfig(t, tt.yaml)
			joined := errors.Join(c.Validate()...)
			if joined == nil || !strings.Contains(joined.Error(), tt.want) {
				t.Errorf("got %v\nwant it to contain %q", joined, tt.want)
			}
			if _, err := mapping.New(c); err == nil {
				t.Error("New accepted a config Validate rejects")
			}
		})
	}
}

func TestValidConfigsHaveNoProblems(t *testing.T) {
	for _, src := range []string{
		"",
		"preset: endatix\ntenant: {organization: true}\nrules: [{client_role: 'hub:admin', grant_role: Admin, tenant: acme}]",
		"tenant: {claim: org.tenant}\npermissions: [reports.view, connectors.export]\nrules: [{claim: dept, grant_permissions: [reports.view, connectors.export]}]",
		"rules: [{group: '/**', grant_role: Viewer}, {claim: email, regex: '@acme\\.test$', grant_roles: [Operator, End User]}]",
		"rules: [{claim: dept, equals: '', grant_role: Viewer}]",
	} {
		if errs := parseConfig(t, src).Validate(); len(errs) > 0 {
			t.Errorf("%q: %v", src, errs)
		}
	}
}

// TestValidateReportsEveryProblemAtOnce compares with a golden file, one
// problem a line: an operator fixes a config in one round, not ten.
// Regenerate with: go test ./mapping/ -run ProblemAtOnce -update
func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "invalid.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mapping mapping.Config `yaml:"mapping"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, e := range doc.Mapping.Validate() {
		got.WriteString(e.Error() + "\n")
	}
	golden := filepath.Join("testdata", "invalid.golden")
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("problems differ from %s (run with -update if intended):\n%s", golden, got.String())
	}
}

func TestGroupGlobs(t *testing.T) {
	tests := []struct {
		pattern, path string
		match         bool
	}{
		{"/engineering", "/engineering", true},
		{"/engineering", "/engineering/backend", false},
		{"/engineering/*", "/engineering/backend", true},
		{"/engineering/*", "/engineering", false},
		{"/engineering/*", "/engineering/backend/api", false},
		{"/engineering/**", "/engineering", true},
		{"/engineering/**", "/engineering/backend/api/v2", true},
		{"/engineering/**", "/engineeringx", false},
		{"/engineering/**", "/sales/engineering", false},
		{"/customers/*/engineering/**", "/customers/acme/engineering", true},
		{"/customers/*/engineering/**", "/customers/acme/engineering/backend", true},
		{"/customers/*/engineering/**", "/customers/acme/sales", false},
		{"/customers/*/engineering/**", "/customers/engineering", false},
		{"/**/admins", "/admins", true},
		{"/**/admins", "/a/b/c/admins", true},
		{"/**/admins", "/a/b/c/admins/x", false},
		{"/**", "/anything/at/all", true},
		{"/*/*", "/a/b", true},
		{"/*/*", "/a", false},
		{"/a/**/b/**/c", "/a/x/b/y/z/c", true},
		{"/a/**/b/**/c", "/a/c", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.path, func(t *testing.T) {
			e := engine(t, "fastn", mapping.Rule{Group: tt.pattern, GrantRole: "Viewer"})
			g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{tt.path}}, nil, now)
			if got := g.HasRole("Viewer"); got != tt.match {
				t.Errorf("%s matches %s: %v, want %v", tt.pattern, tt.path, got, tt.match)
			}
		})
	}
}

func TestManyDoubleStarsStayCheap(t *testing.T) {
	// Backtracking over 30 "**" segments against a 60-segment path would not
	// finish; the state-set matcher is len(pattern) x len(path).
	pattern := "/" + strings.Repeat("**/x/", 30) + "y"
	path := "/" + strings.Repeat("x/", 60) + "z"
	e := engine(t, "fastn", mapping.Rule{Group: pattern, GrantRole: "Viewer"})
	if e.Resolve(mapping.Facts{Groups: []string{path}}, nil, now).HasRole("Viewer") {
		t.Error("matched a path that does not end in y")
	}
}

func TestEveryMatcherKind(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Claim: "tenant_id"}, Rules: []mapping.Rule{
		{ClientRole: "portal:dev", GrantRole: "Developer"},
		{Group: "/engineering/**", GrantRole: "Viewer"},
		{Claim: "department", Equals: ptr("ops"), GrantRole: "Operator"},
		{Claim: "org.level", In: []string{"gold", "platinum"}, GrantPermissions: []string{"billing.view"}},
		{Claim: "email", Regex: `.*@acme\.test`, GrantPermissions: []string{"widget.use"}},
		{Organization: "acme", GrantPermissions: []string{"activity.view"}},
		{Claim: "badge", GrantPermissions: []string{"people.view"}}, // presence
		{RealmRole: "x", GrantRole: "Admin", Tenant: "globex"},
		{Claim: "department", Equals: ptr("sales"), GrantRole: "Owner"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"sub": "u1", "preferred_username": "u", "email": "u@acme.test", "tenant_id": "acme",
		"resource_access": map[string]any{"portal": map[string]any{"roles": []any{"dev"}}},
		"realm_access":    map[string]any{"roles": []any{"x"}},
		"groups":          []any{"/engineering/backend/api"}, "department": []any{"eng", "ops"},
		"org": map[string]any{"level": "gold"}, "organization": []any{"acme"}, "badge": 7.0,
	}
	g := e.Resolve(mapping.FactsFromClaims(claims, mapping.ClaimPaths{}), nil, now)
	for _, p := range []string{"workflows.deploy_prod", "connectors.read", "workflows.execute", "billing.view", "widget.use", "activity.view", "people.view"} {
		if !g.Has(p, now) {
			t.Errorf("missing %s (roles %v)", p, g.Roles)
		}
	}
	if want := []string{"Developer", "Operator", "Viewer"}; !slices.Equal(g.Roles, want) {
		t.Errorf("roles %v, want %v (rank order; Admin pinned to globex and Owner for sales must not apply)", g.Roles, want)
	}
	if g.Tenant != "acme" || g.PrimaryRole() != "Developer" {
		t.Errorf("tenant %q primary %q", g.Tenant, g.PrimaryRole())
	}
}

func TestTenantSources(t *testing.T) {
	facts := mapping.Facts{Subject: "s",
		Groups:        []string{"/customers/globex/ops", "/customers/acme", "/customers/acme/engineering", "/staff"},
		Organizations: []string{"zeta", "beta"},
		Attributes:    map[string][]string{"tenant_id": {"initech"}, "region": {"eu"}},
	}
	tests := []struct {
		name    string
		src     mapping.TenantSource
		tenant  string
		tenants []string
	}{
		{"organization: first alias in sorted order", mapping.TenantSource{Organization: true}, "beta", []string{"beta", "zeta"}},
		{"group prefix: the segment under the prefix, every group", mapping.TenantSource{GroupPrefix: "/customers"}, "acme", []string{"acme", "globex"}},
		{"group prefix with a trailing slash", mapping.TenantSource{GroupPrefix: "/customers/"}, "acme", []string{"acme", "globex"}},
		{"group prefix matching a segment only whole", mapping.TenantSource{GroupPrefix: "/cust"}, "", nil},
		{"attribute", mapping.TenantSource{Attribute: "tenant_id"}, "initech", []string{"initech"}},
		{"claim at sync time reads the attribute", mapping.TenantSource{Claim: "region"}, "eu", []string{"eu"}},
		{"none", mapping.TenantSource{}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := mapping.New(mapping.Config{Tenant: tt.src})
			if err != nil {
				t.Fatal(err)
			}
			g := e.Resolve(facts, nil, now)
			if g.Tenant != tt.tenant || !slices.Equal(g.Tenants, tt.tenants) {
				t.Errorf("tenant %q tenants %v, want %q %v", g.Tenant, g.Tenants, tt.tenant, tt.tenants)
			}
			if want := []string{"/customers/acme", "/customers/acme/engineering", "/customers/globex/ops", "/staff"}; !slices.Equal(g.Teams, want) {
				t.Errorf("teams %v, want every group, sorted", g.Teams)
			}
		})
	}
}

func TestPinnedRules(t *testing.T) {
	rules := []mapping.Rule{
		{RealmRole: "globex-admin", GrantRole: "Admin", Tenant: "globex"},
		{RealmRole: "acme-viewer", GrantRole: "Viewer", Tenant: "acme"},
		{RealmRole: "dev", GrantRole: "Developer"},
	}
	tests := []struct {
		name   string
		src    mapping.TenantSource
		facts  mapping.Facts
		tenant string
		roles  []string
	}{
		{"a pinned rule counts in its tenant", mapping.TenantSource{GroupPrefix: "/customers"},
			mapping.Facts{Groups: []string{"/customers/globex"}, RealmRoles: []string{"globex-admin", "acme-viewer"}}, "globex", []string{"Admin"}},
		{"a pinned rule does not count in another tenant", mapping.TenantSource{GroupPrefix: "/customers"},
			mapping.Facts{Groups: []string{"/customers/initech"}, RealmRoles: []string{"globex-admin", "dev"}}, "initech", []string{"Developer"}},
		{"without a source tenant the first matching pinned rule places the subject", mapping.TenantSource{},
			mapping.Facts{RealmRoles: []string{"acme-viewer", "globex-admin", "dev"}}, "globex", []string{"Admin", "Developer"}},
		{"no pinned rule matching leaves no tenant", mapping.TenantSource{},
			mapping.Facts{RealmRoles: []string{"dev"}}, "", []string{"Developer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := mapping.New(mapping.Config{Tenant: tt.src, Rules: rules})
			if err != nil {
				t.Fatal(err)
			}
			g := e.Resolve(tt.facts, nil, now)
			if g.Tenant != tt.tenant || !slices.Equal(g.Roles, tt.roles) {
				t.Errorf("tenant %q roles %v, want %q %v", g.Tenant, g.Roles, tt.tenant, tt.roles)
			}
		})
	}
}

func TestRulesRunInOrderAndTheFirstExplains(t *testing.T) {
	e := engine(t, "fastn",
		mapping.Rule{RealmRole: "a", GrantPermissions: []string{"workflows.read"}},
		mapping.Rule{RealmRole: "b", GrantRole: "Viewer"})
	g := subject(e, "s", "acme", "a", "b")
	if d := decide(e, g, mapping.Resource{}, "workflows.read"); d.Rule != "rule #0: realm_role a" || d.Role != "" {
		t.Errorf("explained by %+v, want the first rule", d)
	}
	if d := decide(e, g, mapping.Resource{}, "tools.read"); d.Rule != "rule #1: realm_role b" || d.Role != "Viewer" {
		t.Errorf("explained by %+v", d)
	}
}
