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
	"github.com/keybridge/keybridge/internal/revocation"
	"github.com/keybridge/keybridge/internal/store"
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

// Issue 14: a token whose session Keycloak ended is refused, with reason
// revoked, although both caches (verified tokens, grants) hold it; another
// session's token still passes.
func TestEndedSessionRefusedPastBothCaches(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory.Directory{Pool: pool, Base: engine, Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	list := &revocation.List{Pool: pool}
	if err := list.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	toks := map[string]*auth.Token{}
	for _, sid := range []string{"s1", "s2"} {
		toks[sid] = &auth.Token{Subject: "u-" + sid, Claims: map[string]any{"sub": "u-" + sid, "sid": sid, "azp": "app"},
			IssuedAt: now, Expiry: now.Add(5 * time.Minute), Until: now.Add(5 * time.Minute), Hash: [32]byte{sid[1]}}
	}
	verifications := 0
	var refused []auth.Reason
	r := &identity.Resolver{
		Verifier: &auth.Cached{Size: 10, Next: verifierFunc(func(_ context.Context, raw string) (*auth.Token, error) {
			verifications++
			return toks[raw], nil
		})},
		Dir: dir, Revocations: list, MaxCache: 10,
		OnRefuse: func(_ context.Context, reason auth.Reason, _ error) { refused = append(refused, reason) },
	}
	for range 2 {
		for sid := range toks {
			if _, err := r.Identify(ctx, sid); err != nil {
				t.Fatalf("%s before the logout: %v", sid, err)
			}
		}
	}
	if verifications != 2 {
		t.Fatalf("%d verifications for two tokens used twice: the caches are not in play", verifications)
	}
	if _, err := store.SaveRevocations(ctx, pool, []store.Revocation{{Kind: store.RevokedSession, ID: "s1", At: now}}, now.Add(-time.Hour), store.AnySeq); err != nil {
		t.Fatal(err)
	}
	if err := list.Update(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = r.Identify(ctx, "s1")
	if auth.ReasonOf(err) != auth.Revoked || len(refused) != 1 || refused[0] != auth.Revoked {
		t.Fatalf("ended session: err %v, refusals %v; want revoked", err, refused)
	}
	if _, err := r.Identify(ctx, "s2"); err != nil {
		t.Fatalf("another session's token: %v", err)
	}
}

type verifierFunc func(context.Context, string) (*auth.Token, error)

func (f verifierFunc) Verify(ctx context.Context, raw string) (*auth.Token, error) {
	return f(ctx, raw)
}
