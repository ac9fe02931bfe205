package identity_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// Issue 16: the directory loads the organization -> customers tree sync
// stored (tenants.org_id) and places only customers of active
// organizations; an Owner of acme acts in acme's customers and no other,
// and a customer moved to another organization leaves its reach once the
// directory reloads, whatever the grant cache held.
func TestDirectoryLoadsTheTenantTree(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := pool.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	exec(`INSERT INTO tenants (id, name, source, status) VALUES ('acme', 'Acme', 'organization', 'active'),
		('gone', 'Gone', 'organization', 'deleted'), ('globex', 'Globex', 'organization', 'active')`,
		`INSERT INTO tenants (id, name, source, org_id) VALUES ('acme-eu', 'EU', 'group', 'acme'), ('acme-us', 'US', 'group', 'acme'),
		('of-gone', 'x', 'group', 'gone'), ('of-customer', 'x', 'group', 'acme-eu'), ('of-nothing', 'x', 'group', 'nowhere'), ('gx', 'x', 'group', 'globex')`,
		`INSERT INTO people (id, username, status) VALUES ('u1', 'olivia', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'u1')`,
		`INSERT INTO roles (name, kind) VALUES ('Owner', 'system')`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'u1', id, 'acme', 'rule' FROM roles WHERE name = 'Owner'`)
	engine, err := mapping.New(mapping.Config{Preset: "fastn",
		Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := &auth.Token{Subject: "u1", Claims: map[string]any{"sub": "u1"}, Expiry: now.Add(time.Hour), Until: now.Add(time.Hour), Hash: [32]byte{7}}
	r := &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10}

	c, err := r.Identify(ctx, "t")
	if err != nil || c.Grant.Tenant != "acme" || !slices.Equal(c.Grant.Tenants, []string{"acme", "acme-eu", "acme-us"}) ||
		!slices.Equal(c.Grant.Customers, []string{"acme-eu", "acme-us"}) || c.Grant.Org != "acme" {
		t.Fatalf("%v %+v", err, c.Grant)
	}
	for range 2 { // the second answers from the cache
		c, err := r.IdentifyIn(ctx, "t", "acme-us")
		if err != nil || c.Grant.Tenant != "acme-us" || c.Grant.Org != "acme" || c.Grant.PrimaryRole() != "Owner" {
			t.Fatalf("acme-us: %v %+v", err, c.Grant)
		}
	}
	for _, other := range []string{"of-gone", "of-customer", "of-nothing", "gx", "globex"} {
		var te *mapping.TenantError
		if _, err := r.IdentifyIn(ctx, "t", other); !errors.As(err, &te) {
			t.Errorf("%s: %v", other, err)
		}
	}
	exec(`UPDATE tenants SET org_id = 'globex' WHERE id = 'acme-us'`)
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.IdentifyIn(ctx, "t", "acme-us"); err == nil {
		t.Error("a customer moved to globex is still reached from acme")
	}
}
