package manage_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// A tenant id becomes an organization alias or a group name, and every
// path and token spells it: no separators, no spaces, nothing empty.
func TestValidTenantID(t *testing.T) {
	for _, ok := range []string{"acme", "Acme-2", "a.b_c", strings.Repeat("x", 63)} {
		if err := manage.ValidTenantID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", "-acme", ".acme", "acme\n", "äcme", strings.Repeat("x", 64)} {
		if manage.ValidTenantID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Attribute and claim tenants, or none configured, have no Keycloak object
// to create or change: a conflict that names the source, asked of nobody.
func TestTenantsWithoutAKeycloakObjectAreAConflict(t *testing.T) {
	for _, src := range []mapping.TenantSource{{Attribute: "tenant_id"}, {Claim: "org.id"}, {}} {
		s := &manage.Tenants{Source: src} // no Keycloak, no database: neither may be asked
		_, err := s.Create(context.Background(), nil, "acme", "Acme")
		if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "mapping.tenant") {
			t.Errorf("create with %+v: %v", src, err)
		}
		off := true
		if _, err := s.Update(context.Background(), nil, "acme", manage.TenantChange{Disabled: &off}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("disable with %+v: %v", src, err)
		}
	}
	s := &manage.Tenants{Source: mapping.TenantSource{Organization: true}}
	var invalid *manage.Invalid
	if _, err := s.Create(context.Background(), nil, "acme", " Acme"); !errors.As(err, &invalid) {
		t.Errorf("a name with a leading space: %v", err)
	}
	if _, err := s.Update(context.Background(), nil, "acme", manage.TenantChange{}); !errors.As(err, &invalid) {
		t.Errorf("a change of nothing: %v", err)
	}
}
