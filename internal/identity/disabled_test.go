package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// Issue 16: a disabled tenant is refused to everyone acting in it — with a
// *mapping.TenantError naming it disabled, from the cache too — except a
// platform caller, who inspects and enables it; enabled again, it is served.
func TestDisabledTenantIsRefusedButToPlatformCallers(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	record := func(status string) {
		t.Helper()
		// As tenant administration records it (manage.Tenants).
		if err := store.RecordTenant(ctx, pool, store.TenantRow{ID: "acme", Name: "Acme", Source: "organization", Status: status, KeycloakID: "org-1"}); err != nil {
			t.Fatal(err)
		}
	}
	record("active")
	for _, q := range []string{
		`INSERT INTO people (id, username, status) VALUES ('u1', 'amy', 'active'), ('p1', 'root', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'u1'), ('acme', 'p1')`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	engine, err := mapping.New(mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{Organization: true},
		Rules: []mapping.Rule{{RealmRole: "admin", GrantRole: "Admin"}, {RealmRole: "platform", GrantRole: "PlatformAdmin"}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Interval: time.Hour}
	now := time.Now()
	token := func(sub, role string, h byte) *identity.Resolver {
		tok := &auth.Token{Subject: sub, Expiry: now.Add(time.Hour), Until: now.Add(time.Hour), Hash: [32]byte{h},
			Claims: map[string]any{"sub": sub, "realm_access": map[string]any{"roles": []any{role}}}}
		return &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10}
	}
	admin, platform := token("u1", "admin", 1), token("p1", "platform", 2)
	serve := func(r *identity.Resolver, named string) error {
		t.Helper()
		c, err := r.IdentifyIn(ctx, "t", named)
		if err == nil && c.Grant.Tenant != "acme" {
			t.Fatalf("placed in %q, want acme", c.Grant.Tenant)
		}
		return err
	}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, named := range []string{"", "acme"} {
		if err := serve(admin, named); err != nil { // cached from here
			t.Fatalf("acme's admin while acme is active (named %q): %v", named, err)
		}
	}

	record("disabled")
	if err := dir.Load(ctx); err != nil { // as NOTIFY keybridge_changed makes every replica do
		t.Fatal(err)
	}
	for _, named := range []string{"", "acme"} {
		err := serve(admin, named)
		var te *mapping.TenantError
		if !errors.As(err, &te) || !te.Disabled || te.Tenant != "acme" || te.Grant == nil || te.Grant.Subject != "u1" {
			t.Errorf("acme's admin in disabled acme (named %q): %v", named, err)
		} else if te.Error() != `the caller may not act in tenant "acme": the tenant is disabled` {
			t.Errorf("refusal reason %q", te.Error())
		}
		if err := serve(platform, named); err != nil {
			t.Errorf("a platform caller in disabled acme (named %q): %v", named, err)
		}
	}

	record("active")
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := serve(admin, ""); err != nil {
		t.Errorf("acme's admin once acme is enabled again: %v", err)
	}
}
