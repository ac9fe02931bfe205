package mapping_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// engine50 is a realistic large mapping: 49 role rules that mostly miss and
// one group glob that hits.
func engine50(tb testing.TB) *mapping.Engine {
	var rules []mapping.Rule
	for i := range 49 {
		switch i % 4 {
		case 0:
			rules = append(rules, mapping.Rule{RealmRole: fmt.Sprintf("role-%d", i), GrantRole: "Viewer"})
		case 1:
			rules = append(rules, mapping.Rule{ClientRole: fmt.Sprintf("portal:r%d", i), GrantRole: "Operator"})
		case 2:
			rules = append(rules, mapping.Rule{Group: fmt.Sprintf("/customers/*/team-%d/**", i), GrantPermissions: []string{"billing.view"}})
		case 3:
			rules = append(rules, mapping.Rule{Claim: "department", Equals: ptr(fmt.Sprintf("d%d", i)), GrantRole: "End User"})
		}
	}
	rules = append(rules, mapping.Rule{Group: "/customers/*/engineering/**", GrantRole: "Developer"})
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: rules})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

var benchFacts = mapping.Facts{Subject: "dana", RealmRoles: []string{"role-4", "role-40", "offline_access"},
	Groups:     []string{"/customers/acme", "/customers/acme/engineering/backend"},
	Attributes: map[string][]string{"department": {"d3"}}}

var benchReq = mapping.Request{AnyOf: []string{"billing.manage", "workflows.deploy_prod"}, Resource: mapping.Resource{Tenant: "acme", Owner: "dana"}}

// BenchmarkDecideAllow50Rules is the allow path with a warm grant: a miss
// on the first permission of the any-of, then a hit. Compare with
// BenchmarkMapLookup, one map lookup.
func BenchmarkDecideAllow50Rules(b *testing.B) {
	e := engine50(b)
	now := time.Now()
	g := e.Resolve(benchFacts, nil, now)
	req := benchReq
	req.Now = now
	if d := e.Decide(g, req); !d.Allowed {
		b.Fatal(d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !e.Decide(g, req).Allowed {
			b.Fatal("denied")
		}
	}
}

var sink bool

// BenchmarkMapLookup is the reference: a map[string]struct{} lookup of one
// permission among the catalog's.
func BenchmarkMapLookup(b *testing.B) {
	m := map[string]struct{}{}
	for _, p := range engine50(b).Catalog().Permissions {
		m[p] = struct{}{}
	}
	key := "workflows.deploy_prod"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_, sink = m[key]
	}
}

func BenchmarkResolve50Rules(b *testing.B) {
	e := engine50(b)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = e.Resolve(benchFacts, nil, now)
	}
}

func TestDecideAllowPathDoesNotAllocate(t *testing.T) {
	e := engine50(t)
	g := e.Resolve(benchFacts, []mapping.Assignment{{Permission: "tools.delete", ExpiresAt: now.Add(time.Hour), Ref: "t"}}, now)
	endatix := engine(t, "endatix", mapping.Rule{RealmRole: "a", GrantRole: "Admin"}, mapping.Rule{RealmRole: "p", GrantRole: "PlatformAdmin"},
		mapping.Rule{RealmRole: "o", GrantPermissions: []string{"submissions.delete.owned"}})
	tests := []struct {
		name string
		e    *mapping.Engine
		g    *mapping.Grant
		req  mapping.Request
	}{
		{"a role permission after a miss", e, g, benchReq},
		{"a temporary grant", e, g, mapping.Request{AnyOf: []string{"tools.delete"}}},
		{"a tenant bypass", endatix, subject(endatix, "a", "acme", "a"), mapping.Request{AnyOf: []string{"forms.delete"}, Resource: mapping.Resource{Tenant: "acme"}}},
		{"a global bypass across tenants", endatix, subject(endatix, "p", "acme", "p"), mapping.Request{AnyOf: []string{"platform.logs.view"}, Resource: mapping.Resource{Tenant: "globex"}}},
		{"an owned permission", endatix, subject(endatix, "o", "acme", "o"), mapping.Request{AnyOf: []string{"submissions.delete", "submissions.delete.owned"}, Resource: mapping.Resource{Owner: "o"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Now = now
			if d := tt.e.Decide(tt.g, tt.req); !d.Allowed {
				t.Fatalf("denied: %s", d.Reason)
			}
			if n := testing.AllocsPerRun(100, func() { tt.e.Decide(tt.g, tt.req) }); n != 0 {
				t.Errorf("allow path allocates %v times", n)
			}
		})
	}
}
