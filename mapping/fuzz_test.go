package mapping_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/mapping"
)

// FuzzRuleParsing: any YAML either compiles or is refused with problems that
// name their key; Validate and New agree; a compiled engine resolves and
// decides without panicking.
func FuzzRuleParsing(f *testing.F) {
	f.Add([]byte("preset: fastn\nrules: [{realm_role: a, grant_role: Owner}, {group: '/x/**', grant_permissions: [workflows.read]}]"))
	f.Add([]byte("preset: endatix\ntenant: {claim: t}\nrules: [{claim: a.b, regex: '^x+$', grant_role: Creator, tenant: acme}]"))
	f.Add([]byte("rules: [{group: '/**/**/*', grant_role: Viewer}, {claim: x, in: [a, b], grant_roles: [Admin, Viewer]}]"))
	f.Add([]byte("tenant: {group_prefix: /customers}\npermissions: [reports.view]\nrules: [{organization: acme, grant_permissions: [reports.view], tenant: acme}]"))
	f.Add([]byte("rules: [{claim: email, equals: '', grant_role: 'End User'}, {client_role: 'a:b:c', grant_role: Viewer}]"))
	f.Add([]byte("rules: [{group: '/a/[b', grant_role: Viewer}, {claim: x, regex: '(?P<n>', grant_role: Viewer}]"))
	if b, err := os.ReadFile(filepath.Join("testdata", "invalid.yaml")); err == nil {
		var doc struct {
			Mapping yaml.Node `yaml:"mapping"`
		}
		if yaml.Unmarshal(b, &doc) == nil {
			if out, err := yaml.Marshal(&doc.Mapping); err == nil {
				f.Add(out)
			}
		}
	}
	facts := []mapping.Facts{
		{Subject: "s", Groups: []string{"/x/y/z", "/customers/acme/eng"}, RealmRoles: []string{"a", "b"}, ClientRoles: []string{"a:b"},
			Organizations: []string{"acme"}, Attributes: map[string][]string{"x": {"a"}, "t": {"acme"}, "email": {""}}},
		{},
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c mapping.Config
		if yaml.Unmarshal(data, &c) != nil {
			return
		}
		problems := c.Validate()
		for _, p := range problems {
			if !strings.HasPrefix(p.Error(), "mapping.") {
				t.Errorf("problem %q does not name its key", p)
			}
		}
		e, err := mapping.New(c)
		if (err == nil) != (len(problems) == 0) {
			t.Fatalf("New err %v but Validate %v", err, problems)
		}
		if err != nil {
			return
		}
		perms := e.Catalog().Permissions
		_ = mapping.Matrix(e)
		for _, fs := range facts {
			g := e.Resolve(fs, []mapping.Assignment{{Role: "Owner", ExpiresAt: at.Add(time.Hour)}}, at)
			for _, p := range perms {
				d := e.Decide(g, mapping.Request{AnyOf: []string{p}, Resource: mapping.Resource{Owner: "s"}, Now: at})
				if d.Reason == "" || (d.Allowed && d.Permission != p) {
					t.Fatalf("decision %+v for %s", d, p)
				}
			}
		}
	})
}

// FuzzClaimMatching: any JSON claims resolve and decide without panicking,
// and every decision is consistent with the grant it came from.
func FuzzClaimMatching(f *testing.F) {
	f.Add([]byte(`{"sub":"u","realm_access":{"roles":["a"]},"groups":["/customers/acme/x"],"resource_access":{"portal":{"roles":["dev"]}}}`))
	f.Add([]byte(`{"sub":1,"realm_access":[],"groups":"x","organization":{"acme":{}},"department":["ops",2,null]}`))
	f.Add([]byte(`{"resource_access":{"p":{"roles":[{"x":1}]}},"org":{"level":{"deep":[1,[2]]}}}`))
	f.Add([]byte(`{"sub":"u","organization":["globex","acme"],"tenant_id":["acme","globex"],"email":"u@acme.test","org":{"level":"gold"}}`))
	f.Add([]byte(`{"sub":"u","groups":["/customers/acme/engineering/a/b/c/d/e/f/g/h"],"realm_access":{"roles":["platform","admin"]},"tenant_id":1e21}`))
	f.Add([]byte(`{"sub":"","realm_access":{"roles":null},"resource_access":null,"groups":[null],"organization":null}`))
	eng := func(preset string, src mapping.TenantSource, rules ...mapping.Rule) *mapping.Engine {
		e, err := mapping.New(mapping.Config{Preset: preset, Tenant: src, Rules: rules})
		if err != nil {
			f.Fatal(err)
		}
		return e
	}
	engines := []*mapping.Engine{
		eng("fastn", mapping.TenantSource{GroupPrefix: "/customers"},
			mapping.Rule{RealmRole: "a", GrantRole: "Owner"}, mapping.Rule{ClientRole: "portal:dev", GrantRole: "Developer"},
			mapping.Rule{Group: "/customers/*/x", GrantRole: "Viewer"}, mapping.Rule{Claim: "department", Equals: ptr("ops"), GrantRole: "Operator"},
			mapping.Rule{Claim: "org.level", Regex: "^g", GrantPermissions: []string{"billing.view"}},
			mapping.Rule{Group: "/**/engineering/**", GrantRole: "End User", Tenant: "acme"}),
		eng("endatix", mapping.TenantSource{Claim: "tenant_id"},
			mapping.Rule{RealmRole: "admin", GrantRole: "Admin"}, mapping.Rule{RealmRole: "platform", GrantRole: "PlatformAdmin", Tenant: "globex"},
			mapping.Rule{Organization: "acme", GrantRole: "Creator"}, mapping.Rule{Claim: "email", Regex: "@acme", GrantPermissions: []string{"submissions.delete.owned"}}),
		eng("endatix", mapping.TenantSource{Organization: true}, mapping.Rule{Claim: "sub", GrantRole: "Creator"}),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var claims map[string]any
		if json.Unmarshal(data, &claims) != nil {
			return
		}
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, e := range engines {
			facts := mapping.FactsFromClaims(claims, e.Config().Claims)
			g := e.Resolve(facts, nil, at)
			if !slices.IsSorted(g.Permissions) || (g.Tenant != "" && !slices.Contains(g.Tenants, g.Tenant)) {
				t.Fatalf("grant %+v", g)
			}
			for _, p := range append(e.Catalog().Permissions, "x.y", "") {
				for _, res := range []mapping.Resource{{}, {Owner: facts.Subject}, {Tenant: "globex", Owner: "other"}} {
					d := e.Decide(g, mapping.Request{AnyOf: []string{p, "submissions.delete.owned"}, Resource: res, Now: at})
					if d.Reason == "" {
						t.Fatal("a decision without a reason")
					}
					if d.Allowed && !g.Has(d.Permission, at) && !g.Global() && !g.HasRole("Admin") {
						t.Fatalf("allowed %s without holding it or a bypass: %+v", d.Permission, d)
					}
				}
			}
		}
	})
}
