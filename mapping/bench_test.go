package mapping_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

func engine50(b *testing.B) *mapping.Engine {
	var rules []mapping.Rule
	for i := 0; i < 49; i++ {
		rules = append(rules, mapping.Rule{RealmRole: fmt.Sprintf("role-%d", i), GrantRole: "Viewer"})
	}
	rules = append(rules, mapping.Rule{Group: "/customers/*/engineering/**", GrantRole: "Developer"})
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: rules})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

var facts = mapping.Facts{Subject: "dana", RealmRoles: []string{"role-3", "role-40", "offline_access"},
	Groups: []string{"/customers/acme", "/customers/acme/engineering/backend"}}

// BenchmarkDecideAllow50Rules: the allow path with a warm grant. Reference:
// BenchmarkMapLookup, one map lookup.
func BenchmarkDecideAllow50Rules(b *testing.B) {
	e := engine50(b)
	now := time.Now()
	g := e.Resolve(facts, nil, now)
	req := mapping.Request{AnyOf: []string{"workflows.deploy_prod"}, Resource: mapping.Resource{Tenant: "acme"}, Now: now}
	if !e.Decide(g, req).Allowed {
		b.Fatal("not allowed")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !e.Decide(g, req).Allowed {
			b.Fatal("denied")
		}
	}
}

var sink bool

func BenchmarkMapLookup(b *testing.B) {
	m := map[string]struct{}{}
	for i := 0; i < 40; i++ {
		m[fmt.Sprintf("perm.%d", i)] = struct{}{}
	}
	m["workflows.deploy_prod"] = struct{}{}
	key := "workflows.deploy_prod"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, sink = m[key]
	}
}

func BenchmarkResolve50Rules(b *testing.B) {
	e := engine50(b)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = e.Resolve(facts, nil, now)
	}
}

func TestDecideAllowPathDoesNotAllocate(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{Group: "/customers/*/engineering/**", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	g := e.Resolve(facts, nil, now)
	req := mapping.Request{AnyOf: []string{"workflows.deploy_prod"}, Resource: mapping.Resource{Tenant: "acme"}, Now: now}
	if n := testing.AllocsPerRun(100, func() { e.Decide(g, req) }); n != 0 {
		t.Errorf("allow path allocates %v times", n)
	}
}
