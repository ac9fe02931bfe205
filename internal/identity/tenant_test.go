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
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// twoTenants stores a person synced into acme (Viewer) and globex (Admin),
// and a directory over them, under an organization tenant source.
func twoTenants(t *testing.T) *directory.Directory {
	t.Helper()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, q := range []string{
		`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'organization'), ('globex', 'Globex', 'organization'), ('initech', 'Initech', 'organization')`,
		`INSERT INTO people (id, username, status) VALUES ('u1', 'tess', 'active'), ('u2', 'amy', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'u1'), ('globex', 'u1'), ('acme', 'u2')`,
		`INSERT INTO roles (name, kind) VALUES ('Viewer', 'system'), ('Admin', 'system')`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'u1', id, 'acme', 'rule' FROM roles WHERE name = 'Viewer'`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'u1', id, 'globex', 'rule' FROM roles WHERE name = 'Admin'`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'u2', id, 'acme', 'rule' FROM roles WHERE name = 'Admin'`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Issue 16: the grant cache keys on the tenant a request names, so a
// request naming globex never gets the grant cached for acme, nor one
// naming nothing the grant of a named tenant.
func TestGrantCacheKeysOnTheNamedTenant(t *testing.T) {
	dir := twoTenants(t)
	ctx := context.Background()
	now := time.Now()
	// No organization claim: the token was issued without the scope.
	tok := &auth.Token{Subject: "u1", Claims: map[string]any{"sub": "u1"}, Expiry: now.Add(time.Hour), Until: now.Add(time.Hour), Hash: [32]byte{1}}
	r := &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10}
	for range 2 { // the second round answers from the cache
		for _, tc := range []struct{ named, tenant, role string }{{"acme", "acme", "Viewer"}, {"globex", "globex", "Admin"}, {"", "", ""}} {
			c, err := r.IdentifyIn(ctx, "t", tc.named)
			if err != nil {
				t.Fatalf("named %q: %v", tc.named, err)
			}
			if c.Grant.Tenant != tc.tenant || c.Grant.PrimaryRole() != tc.role || c.Grant.TenantRequired != (tc.named == "") {
				t.Errorf("named %q: tenant %q role %q required %v; want %q %q", tc.named, c.Grant.Tenant, c.Grant.PrimaryRole(), c.Grant.TenantRequired, tc.tenant, tc.role)
			}
		}
	}
	_, err := r.IdentifyIn(ctx, "t", "initech")
	var te *mapping.TenantError
	if !errors.As(err, &te) || te.Tenant != "initech" || te.Grant == nil || te.Grant.Subject != "u1" {
		t.Fatalf("a tenant the person is not in: %v", err)
	}
}

// Issue 16: with tenant.organization and a token without Keycloak's
// organization scope (no organization claim), the synced membership places
// the caller.
func TestSyncedMembershipPlacesATokenWithoutTheOrganizationClaim(t *testing.T) {
	dir := twoTenants(t)
	now := time.Now()
	tok := &auth.Token{Subject: "u2", Claims: map[string]any{"sub": "u2"}, Expiry: now.Add(time.Hour), Until: now.Add(time.Hour), Hash: [32]byte{2}}
	r := &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10}
	c, err := r.Identify(context.Background(), "t")
	if err != nil || c.Grant.Tenant != "acme" || c.Grant.PrimaryRole() != "Admin" {
		t.Fatalf("tenant %q role %q err %v; want acme's Admin from the synced membership", c.Grant.Tenant, c.Grant.PrimaryRole(), err)
	}
}
