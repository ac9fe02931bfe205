package identity_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

type oneToken struct{ tok *auth.Token }

func (o oneToken) Verify(context.Context, string) (*auth.Token, error) { return o.tok, nil }

// A grant resolved with a temporary PlatformAdmin assignment is resolved
// again once that assignment expires, though nothing else changed: the RLS
// session it sets (app.platform) must not outlive the role.
func TestTemporaryGlobalRoleEndsAtItsExpiry(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	expires := time.Now().Add(time.Hour)
	for _, q := range []string{
		`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group')`,
		`INSERT INTO people (id, username, status) VALUES ('u1', 'pat', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'u1')`,
		`INSERT INTO roles (name, kind) VALUES ('PlatformAdmin', 'system')`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO role_assignments (person_id, role_id, tenant_id, source, expires_at)
		SELECT 'u1', id, 'acme', 'local', $1 FROM roles WHERE name = 'PlatformAdmin'`, expires); err != nil {
		t.Fatal(err)
	}
	engine, err := mapping.New(mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := &auth.Token{Subject: "u1", Claims: map[string]any{"sub": "u1", "groups": []any{"/customers/acme"}}, Expiry: now.Add(2 * time.Hour), Until: now.Add(2 * time.Hour)}
	r := &identity.Resolver{Verifier: oneToken{tok}, Dir: dir, MaxCache: 10, Now: func() time.Time { return now }}
	c, err := r.Identify(ctx, "t")
	if err != nil || !c.Grant.Global() {
		t.Fatalf("before the expiry: global %v, err %v", c.Grant.Global(), err)
	}
	now = expires.Add(time.Second)
	c, err = r.Identify(ctx, "t")
	if err != nil || c.Grant.Global() {
		t.Fatalf("after the expiry: global %v, err %v; the expired PlatformAdmin still widens RLS", c.Grant.Global(), err)
	}
}
