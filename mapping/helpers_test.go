package mapping_test

import (
	"slices"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// engine compiles a preset with tenants taken from /customers/<tenant>.
func engine(t testing.TB, preset string, rules ...mapping.Rule) *mapping.Engine {
	t.Helper()
	e, err := mapping.New(mapping.Config{Preset: preset, Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func role(t testing.TB, e *mapping.Engine, name string) mapping.Role {
	t.Helper()
	r, ok := e.Role(name, "")
	if !ok {
		t.Fatalf("no role %q", name)
	}
	return r
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// subject resolves a subject of a tenant holding realm roles.
func subject(e *mapping.Engine, sub, tenant string, realmRoles ...string) *mapping.Grant {
	f := mapping.Facts{Subject: sub, RealmRoles: realmRoles}
	if tenant != "" {
		f.Groups = []string{"/customers/" + tenant}
	}
	return e.Resolve(f, nil, now)
}

func decide(e *mapping.Engine, g *mapping.Grant, res mapping.Resource, anyOf ...string) mapping.Decision {
	return e.Decide(g, mapping.Request{AnyOf: anyOf, Resource: res, Now: now})
}

func ptr[T any](v T) *T { return &v }
