package identity_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// A grant this replica cached does not outlive a change another replica
// makes: a custom role losing a permission ({"kind":"roles"}) and the
// assignment's removal ({"kind":"person"}) each change the resolved grant
// within a second of the NOTIFY, with the periodic reload an hour away.
func TestCachedGrantEndsOnAnotherReplicasChange(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, q := range []string{
		`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group')`,
		`INSERT INTO people (id, username, status) VALUES ('u1', 'pat', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'u1')`,
		`INSERT INTO roles (name, kind, tenant_id) VALUES ('Deployer', 'custom', 'acme')`,
		`INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, p, 'acme' FROM roles, unnest(ARRAY['workflows.deploy_prod', 'workflows.read']) p WHERE name = 'Deployer'`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'u1', id, 'acme', 'local' FROM roles WHERE name = 'Deployer'`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: time.Hour}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dir.Run(rctx)
	}()
	defer func() { cancel(); <-done }()
	testenv.Eventually(t, "the first load", 10*time.Second, dir.Loaded)

	now := time.Now()
	tok := &auth.Token{Subject: "u1", Claims: map[string]any{"sub": "u1", "groups": []any{"/customers/acme"}}, Expiry: now.Add(time.Hour), Until: now.Add(time.Hour)}
	r := &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10}
	may := func(perm string) bool {
		c, err := r.Identify(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		return dir.Engine().Decide(c.Grant, mapping.Request{AnyOf: []string{perm}, Now: time.Now()}).Allowed
	}
	// The second call answers from the grant cache, which the test then
	// expects to follow the other replica's changes.
	if first, cached := may("workflows.deploy_prod"), may("workflows.deploy_prod"); !first || !cached {
		t.Fatal("the Deployer role does not grant workflows.deploy_prod")
	}
	// The other replica's changes, each committed with its notification.
	other := func(stmts ...string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, q := range stmts {
				if _, err := tx.Exec(ctx, q); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	other(`DELETE FROM role_permissions WHERE permission = 'workflows.deploy_prod'`,
		`SELECT pg_notify('keybridge_changed', '{"kind":"roles"}')`)
	took := testenv.Eventually(t, "the cached grant loses the role's permission", time.Second, func() bool { return !may("workflows.deploy_prod") })
	t.Logf("custom role edit: %v", took)
	if !may("workflows.read") {
		t.Fatal("the role's other permission went too")
	}
	other(`DELETE FROM role_assignments WHERE person_id = 'u1'`,
		`SELECT pg_notify('keybridge_changed', '{"kind":"person","id":"u1"}')`)
	took = testenv.Eventually(t, "the cached grant loses the role", time.Second, func() bool { return !may("workflows.read") })
	t.Logf("assignment removal: %v", took)
}
