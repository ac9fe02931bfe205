package mapping_test

import (
	"encoding/json"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/mapping"
)

// FuzzRuleParsing: any YAML is a compiled engine or errors; never a panic.
func FuzzRuleParsing(f *testing.F) {
	f.Add([]byte("preset: fastn\nrules: [{realm_role: a, grant_role: Owner}, {group: '/x/**', grant_permissions: [workflows.read]}]"))
	f.Add([]byte("preset: endatix\ntenant: {claim: t}\nrules: [{claim: a.b, regex: '^x+$', grant_role: Creator, tenant: acme}]"))
	f.Add([]byte("rules: [{group: '/**/**/*', grant_role: Viewer}, {claim: x, in: [a, b], grant_roles: [Admin, Viewer]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c mapping.Config
		if yaml.Unmarshal(data, &c) != nil {
			return
		}
		e, err := mapping.New(c)
		if err != nil {
			return
		}
		g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"/x/y/z"}, RealmRoles: []string{"a"}}, nil, time.Now())
		e.Decide(g, mapping.Request{AnyOf: []string{"workflows.read"}, Now: time.Now()})
	})
}

// FuzzClaimMatching: any JSON claims resolve and decide; never a panic.
func FuzzClaimMatching(f *testing.F) {
	f.Add([]byte(`{"sub":"u","realm_access":{"roles":["a"]},"groups":["/customers/acme/x"],"resource_access":{"portal":{"roles":["dev"]}}}`))
	f.Add([]byte(`{"sub":1,"realm_access":[],"groups":"x","organization":{"acme":{}},"department":["ops",2,null]}`))
	f.Add([]byte(`{"resource_access":{"p":{"roles":[{"x":1}]}},"org":{"level":{"deep":[1,[2]]}}}`))
	eq := "ops"
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: []mapping.Rule{
		{RealmRole: "a", GrantRole: "Owner"}, {ClientRole: "portal:dev", GrantRole: "Developer"},
		{Group: "/customers/*/x", GrantRole: "Viewer"}, {Claim: "department", Equals: &eq, GrantRole: "Operator"},
		{Claim: "org.level", Regex: "^g", GrantPermissions: []string{"billing.view"}},
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var claims map[string]any
		if json.Unmarshal(data, &claims) != nil {
			return
		}
		now := time.Now()
		g := e.Resolve(mapping.FactsFromClaims(claims, mapping.ClaimPaths{}), nil, now)
		d := e.Decide(g, mapping.Request{AnyOf: []string{"workflows.read", "connectors.delete.owned"}, Resource: mapping.Resource{Owner: "u"}, Now: now})
		if d.Reason == "" {
			t.Fatal("decision without a reason")
		}
	})
}
